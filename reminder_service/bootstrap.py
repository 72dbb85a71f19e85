"""The composition root: the one place that builds the service's parts from settings.

What only some commands use (the HTTP app, the Twilio and SMTP channels, the HL7 and bounce
listeners, the template check) is imported where it is built: a command pays only for the parts
it starts (`run` on the file outbox loads neither Twilio nor aiohttp).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from .catalog import Catalog
from .channels.base import EmailChannel, SmsChannel, SmsSender
from .channels.bounces import bounce_address
from .channels.outbox import OutboxChannel
from .channels.send_rate import LocalSendRate, SendRate, SharedSendRate
from .channels.unsubscribe import UnsubscribeLinks, UnsubscribeTokens
from .clock import Clock, system_clock
from .configuration.clinics import load_clinics
from .configuration.delivery_failures import load_failure_table
from .configuration.protocols import load_protocols
from .importers.base import ImportDefaults
from .rendering.layout import missing_parts
from .rendering.renderer import Renderer
from .services.api_keys import ApiKeys
from .services.confirmations import Confirmations
from .services.delivery_status import DeliveryStatusService
from .services.dispatching import DispatchPolicy, DispatchService
from .services.email_opt_outs import EmailOptOuts
from .services.follow_ups import FollowUps
from .services.importing import ImportService
from .services.materializing import Materializer
from .services.previewing import PreviewService
from .services.replies import ReplyService
from .services.reply_inbox import ReplyInbox
from .settings import Settings
from .store.startup import DatabaseUse, Patience, open_database

if TYPE_CHECKING:
    from pathlib import Path

    from fastapi import FastAPI
    from sqlalchemy import Engine

    from .channels.twilio_sms import TwilioSmsChannel
    from .entrypoints.bounce_listener import BounceListener
    from .entrypoints.http_server import HttpServer
    from .entrypoints.mllp import MllpServer
    from .entrypoints.scheduler import DispatchTimer
    from .importers.csv_mapping import CsvMapping
    from .rendering.template_check import TemplateReport
    from .services.bounces import BounceService
    from .services.hl7_feed import SiuFeed
    from .services.staff_users import StaffUsers

# After an SMS whose outcome is unknown, this many retry bases pass before the provider is
# asked (3 minutes by default): its status callback usually settles the reminder before that.
SETTLE_RETRY_BASES = 6
# With Twilio, what one process holds claimed is at most this many seconds of the whole rate.
CLAIMED_SECONDS = 2.0


@dataclass(frozen=True)
class Service:
    settings: Settings
    engine: Engine
    catalog: Catalog
    renderer: Renderer
    importer: ImportService
    dispatcher: DispatchService
    materializer: Materializer
    delivery_status: DeliveryStatusService
    replies: ReplyService
    confirmations: Confirmations
    clock: Clock

    def http_app(self) -> FastAPI:
        from fastapi import APIRouter

        from .entrypoints.api.app import create_app
        from .entrypoints.api.appointments import build_router
        from .entrypoints.api.keys import require_key
        from .entrypoints.api.replies import build_replies_router

        token = self.settings.twilio.auth_token if self.settings.twilio else None
        keys = ApiKeys(self.engine, self.clock)
        clinics = tuple(self.catalog.clinics.by_id)
        router = APIRouter()
        router.include_router(
            build_router(
                self.importer,
                self.previewer(),
                keys,
                self.import_defaults,
                clinics=clinics,
                mappings_dir=self.settings.config_dir / "mappings",
            )
        )
        router.include_router(
            build_replies_router(
                self.inbox(), self.confirmations, require_key(keys), clinics=clinics
            )
        )
        return create_app(
            self.engine,
            self.delivery_status,
            self.replies,
            public_url=self.settings.public_url,
            twilio_auth_token=token,
            router=router,
            email_opt_outs=self.email_opt_outs(),
        )

    def http_server(self) -> HttpServer:
        """The HTTP endpoints on REMINDER_HTTP_HOST and REMINDER_HTTP_PORT."""
        from .entrypoints.http_server import HttpServer

        return HttpServer(self.http_app(), self.settings.http_host, self.settings.http_port)

    def dispatch_timer(self) -> DispatchTimer:
        """The dispatcher's loop, with the planning horizon's and the confirmations' checks."""
        from .entrypoints.scheduler import DispatchTimer

        settings = self.settings
        return DispatchTimer(
            self.dispatcher,
            self.clock,
            max_idle=timedelta(seconds=settings.max_idle_seconds),
            watch_every=settings.watch_seconds,
            materializer=self.materializer,
            materialize_every=timedelta(minutes=settings.materialize_minutes),
            confirmations=self.confirmations,
        )

    def api_keys(self) -> ApiKeys:
        return ApiKeys(self.engine, self.clock)

    def staff_users(self) -> StaffUsers:
        from .services.staff_users import StaffUsers

        return StaffUsers(self.engine, self.clock)

    def siu_feed(self, clinic: str | None, mapping: Path | None) -> tuple[SiuFeed, list[str]]:
        """An HL7 feed read with this mapping file (raises ConfigError for a bad one), for
        `clinic` or the mapping's; with the problems that make it unusable (unknown clinics)."""
        from .importers.hl7v2_siu import load_siu_mapping
        from .services.hl7_feed import SiuFeed
        from .services.hl7_import import feed_clinic

        siu_mapping = load_siu_mapping(mapping) if mapping else None
        chosen, problems = feed_clinic(clinic, siu_mapping, self.catalog.clinics.by_id)
        defaults = None if chosen == "" else self.import_defaults(chosen)
        return SiuFeed(siu_mapping, defaults, self.clinic_defaults()), problems

    def mllp_server(self, feed: SiuFeed, host: str, port: int) -> MllpServer:
        """Applies each HL7 message it receives from `feed` and acknowledges it."""
        from .entrypoints.mllp import MllpServer
        from .services.hl7_feed import acknowledge

        return MllpServer(partial(acknowledge, self.importer, feed), host, port)

    def bounce_listener(self, host: str, port: int) -> BounceListener | None:
        """Receives bounces and unsubscribe emails; None where bounces() is."""
        from .entrypoints.bounce_listener import BounceListener

        receiver = self.bounces()
        return None if receiver is None else BounceListener(receiver.receive, host, port)

    def email_opt_outs(self) -> EmailOptOuts:
        return EmailOptOuts(self.engine, unsubscribe_tokens(self.settings), self.clock)

    def bounces(self) -> BounceService | None:
        """Reads bounces when emails go by SMTP with SMTP_BOUNCE_ADDRESS set; else None."""
        from .services.bounces import BounceService

        address = bounce_address(self.settings.smtp)
        if address is None or self.settings.email_channel != "smtp":
            return None
        return BounceService(
            self.engine,
            FollowUps(self.catalog),
            address,
            self.clock,
            unsubscribe=unsubscribe_links(self.settings),
            opt_outs=self.email_opt_outs(),
        )

    def inbox(self) -> ReplyInbox:
        return ReplyInbox(self.engine, self.catalog, self.clock)

    def previewer(self) -> PreviewService:
        return PreviewService(self.engine, self.catalog, self.renderer, self.clock)

    def import_defaults(self, clinic_id: str | None) -> ImportDefaults:
        """What an import assumes for rows that do not say: the clinic's zone, region, language."""
        clinic = self.catalog.clinics.get(clinic_id) or self.catalog.clinics.default
        regions = tuple((c.id, c.phone_region.upper()) for c in self.catalog.clinics.by_id.values())
        return ImportDefaults(
            clinic_id=clinic.id,
            timezone=clinic.timezone,
            phone_region=clinic.phone_region,
            language=clinic.default_language,
            clinic_regions=regions,
            fhir_caregiver_copies=self.settings.fhir_caregiver_copies,
        )

    def clinic_defaults(self) -> dict[str, ImportDefaults]:
        """Every clinic's import defaults, for feeds that say per message which clinic they are
        for (HL7's sending facility)."""
        return {
            clinic_id: self.import_defaults(clinic_id) for clinic_id in self.catalog.clinics.by_id
        }

    def close(self) -> None:
        self.dispatcher.close()
        self.engine.dispose()


def load_catalog(settings: Settings) -> Catalog:
    """Clinics, protocols and the failure table, validated; raises ConfigError listing every
    problem."""
    clinics = load_clinics(settings.config_dir / "clinics.yaml")
    protocols = load_protocols(
        settings.config_dir / "protocols", partial(missing_parts, settings.templates_dir)
    )
    failures = load_failure_table(settings.config_dir / "delivery_failures.yaml")
    return Catalog(protocols=tuple(protocols), clinics=clinics, failures=failures)


def load_csv_mapping(path: Path) -> CsvMapping:
    """A CSV column mapping file; raises ConfigError naming each problem."""
    from .importers.csv_mapping import load_mapping

    return load_mapping(path)


def template_report(settings: Settings, max_grade: float) -> TemplateReport:
    """check-templates: every configured template rendered as it is sent and checked against
    config/sms_budgets.yaml and `max_grade` (rendering/template_check.py); raises ConfigError."""
    from .configuration.sms_budgets import load_sms_budgets
    from .rendering.template_check import check_templates

    catalog = load_catalog(settings)
    budgets = load_sms_budgets(settings.config_dir / "sms_budgets.yaml")
    return check_templates(catalog, Renderer(settings.templates_dir), budgets, max_grade)


def build(
    settings: Settings, clock: Clock = system_clock, *, use: DatabaseUse = DatabaseUse.MIGRATE
) -> Service:
    """Everything, on a database ready for `use` (see store/startup.py): raises ConfigError for
    the configuration, StartupError for a database that cannot be used."""
    catalog = load_catalog(settings)
    patience = Patience.lasting(settings.database_wait_seconds)
    engine = open_database(settings.database_url, use, patience)
    renderer = Renderer(settings.templates_dir)
    sms, email, sms_lookup = _channels(settings, engine, catalog)
    horizon = timedelta(hours=settings.planning_horizon_hours)
    retry_base = timedelta(seconds=settings.retry_base_seconds)
    retry_cap = timedelta(seconds=settings.retry_cap_seconds)
    policy = DispatchPolicy(
        lease=timedelta(seconds=settings.lease_seconds),
        batch=settings.dispatch_batch,
        max_in_flight=_max_in_flight(settings),
        retry_base=retry_base,
        retry_cap=retry_cap,
        settle=min(SETTLE_RETRY_BASES * retry_base, retry_cap),
    )
    return Service(
        settings=settings,
        engine=engine,
        catalog=catalog,
        renderer=renderer,
        importer=ImportService(engine, catalog, clock, horizon),
        dispatcher=DispatchService(
            engine,
            catalog,
            renderer,
            sms,
            email,
            clock,
            policy,
            failures=catalog.failures,
            public_url=settings.public_url,
            email_from=settings.sender_address,
            sms_lookup=sms_lookup,
            unsubscribe=unsubscribe_links(settings),
        ),
        materializer=Materializer(engine, catalog, clock, horizon),
        delivery_status=DeliveryStatusService(engine, FollowUps(catalog), catalog.failures, clock),
        replies=ReplyService(engine, catalog, renderer, clock),
        confirmations=Confirmations(engine, catalog, clock),
        clock=clock,
    )


def unsubscribe_links(settings: Settings) -> UnsubscribeLinks:
    """The List-Unsubscribe links of patient emails (see channels/unsubscribe.py): one-click
    and a mailto the bounce listener reads need REMINDER_UNSUBSCRIBE_SECRET; without it, a
    mailto to a mailbox staff read."""
    tokens = unsubscribe_tokens(settings)
    bounces = bounce_address(settings.smtp)
    return UnsubscribeLinks(
        tokens,
        public_url=settings.public_url,
        inbound=bounces if settings.email_channel == "smtp" else None,
        mailbox=settings.unsubscribe_mailbox,
    )


def unsubscribe_tokens(settings: Settings) -> UnsubscribeTokens | None:
    secret = settings.unsubscribe_secret
    return UnsubscribeTokens(secret.encode()) if secret else None


def _channels(
    settings: Settings, engine: Engine, catalog: Catalog
) -> tuple[SmsChannel, EmailChannel, TwilioSmsChannel | None]:
    """One instance of each per process, and the SMS channel again when it can be asked about
    an attempt whose answer was lost (Twilio's can)."""
    outbox = OutboxChannel(settings.outbox_dir, settings.email_from)
    sms: SmsChannel = outbox
    email: EmailChannel = outbox
    twilio = None
    if settings.sms_channel == "twilio":
        from .channels.twilio_sms import TwilioSmsChannel

        assert settings.twilio is not None  # settings.validate() checked it
        sms = twilio = TwilioSmsChannel(
            settings.twilio,
            concurrency=settings.sms_concurrency,
            rate_limit=settings.sms_rate_limit,
            send_rate_for=partial(_sms_send_rate, settings, engine),
            senders=[
                SmsSender(c.sms_from, c.messaging_service_sid)
                for c in catalog.clinics.by_id.values()
                if c.sms_from or c.messaging_service_sid
            ],
        )
    if settings.email_channel == "smtp":
        from .channels.smtp_email import SmtpEmailChannel

        assert settings.smtp is not None
        email = SmtpEmailChannel(settings.smtp)
    return sms, email, twilio


def _shares_rate(engine: Engine) -> bool:
    """Whether the SMS rate limit is shared through the database: on PostgreSQL, where several
    processes (and hosts) may send from one sender. A SQLite database is one host's: each
    process keeps its own pace there."""
    return engine.dialect.name == "postgresql"


def _sms_send_rate(settings: Settings, engine: Engine, sender: str) -> SendRate:
    """A sender's pace: one token bucket per sender in PostgreSQL, shared by every process
    using the database; else this process's own."""
    if not _shares_rate(engine):
        return LocalSendRate(settings.sms_rate_limit)
    from .store.send_rate_buckets import PostgresRateBuckets

    return SharedSendRate(
        PostgresRateBuckets(engine),
        sender,
        settings.sms_rate_limit,
        # While the database fails, sends wait; not so long that their claims run out.
        give_up_after=settings.lease_seconds / 6,
    )


def _max_in_flight(settings: Settings) -> int:
    """Claimed and not yet recorded at once: enough to keep every channel busy, at most
    REMINDER_MAX_IN_FLIGHT, and with Twilio at most CLAIMED_SECONDS of the SMS rate, and a third
    of the lease. Rows waiting their turn would be outcomes to ask Twilio about after a crash,
    and a claim must not expire while it waits. When processes share the rate, each gets an
    unknown part of it: N processes then hold at most 2N seconds of sends between them, within a
    third of the lease while N <= lease/6 (10 at the default 60 s)."""
    wanted = min(
        settings.max_in_flight, 2 * max(settings.sms_concurrency, settings.email_concurrency)
    )
    if settings.sms_channel == "twilio":
        seconds = min(CLAIMED_SECONDS, settings.lease_seconds / 3)
        wanted = min(wanted, int(settings.sms_rate_limit * seconds))
    return max(1, wanted)
