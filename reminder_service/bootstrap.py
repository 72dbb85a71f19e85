"""The composition root: the one place that builds the service's parts from settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from sqlalchemy import Engine

from .api.app import create_app
from .api.appointments import build_router
from .catalog import Catalog
from .channels.base import EmailChannel, SmsChannel
from .channels.outbox import OutboxChannel
from .channels.send_rate import LocalSendRate, SendRate, SharedSendRate
from .channels.smtp_email import SmtpEmailChannel
from .channels.twilio_sms import TwilioSmsChannel
from .clock import Clock, system_clock
from .configuration.clinics import load_clinics
from .configuration.delivery_failures import load_failure_table
from .configuration.protocols import load_protocols
from .importers.csv_rows import ImportDefaults
from .rendering import Renderer
from .services.api_keys import ApiKeys
from .services.bounces import BounceService
from .services.delivery_status import DeliveryStatusService
from .services.dispatching import DispatchPolicy, DispatchService
from .services.follow_ups import FollowUps
from .services.importing import ImportService
from .services.materializing import Materializer
from .services.previewing import PreviewService
from .services.replies import ReplyService
from .settings import Settings
from .store.send_rate_buckets import PostgresRateBuckets
from .store.startup import DatabaseUse, Patience, open_database
from .template_layout import missing_parts

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
    clock: Clock

    def http_app(self) -> FastAPI:
        token = self.settings.twilio.auth_token if self.settings.twilio else None
        router = build_router(
            self.importer,
            self.previewer(),
            ApiKeys(self.engine, self.clock),
            self.import_defaults,
            clinics=tuple(self.catalog.clinics.by_id),
            mappings_dir=self.settings.config_dir / "mappings",
        )
        return create_app(
            self.engine,
            self.delivery_status,
            self.replies,
            public_url=self.settings.public_url,
            twilio_auth_token=token,
            router=router,
        )

    def bounces(self) -> BounceService | None:
        """Reads bounces when emails go by SMTP with SMTP_BOUNCE_ADDRESS set; else None."""
        address = self.settings.smtp.bounces() if self.settings.smtp else None
        if address is None or self.settings.email_channel != "smtp":
            return None
        return BounceService(self.engine, FollowUps(self.catalog), address, self.clock)

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


def build(
    settings: Settings, clock: Clock = system_clock, *, use: DatabaseUse = DatabaseUse.MIGRATE
) -> Service:
    """Everything, on a database ready for `use` (see store/startup.py): raises ConfigError for
    the configuration, StartupError for a database that cannot be used."""
    catalog = load_catalog(settings)
    patience = Patience.lasting(settings.database_wait_seconds)
    engine = open_database(settings.database_url, use, patience)
    renderer = Renderer(settings.templates_dir)
    sms, email = _channels(settings, engine)
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
            email_from=settings.email_from,
            sms_lookup=sms if isinstance(sms, TwilioSmsChannel) else None,
        ),
        materializer=Materializer(engine, catalog, clock, horizon),
        delivery_status=DeliveryStatusService(engine, FollowUps(catalog), catalog.failures, clock),
        replies=ReplyService(engine, catalog, renderer, clock),
        clock=clock,
    )


def _channels(settings: Settings, engine: Engine) -> tuple[SmsChannel, EmailChannel]:
    """One instance of each per process."""
    outbox = OutboxChannel(settings.outbox_dir, settings.email_from)
    sms: SmsChannel = outbox
    email: EmailChannel = outbox
    if settings.sms_channel == "twilio":
        assert settings.twilio is not None  # settings.validate() checked it
        sms = TwilioSmsChannel(
            settings.twilio,
            concurrency=settings.sms_concurrency,
            rate_limit=settings.sms_rate_limit,
            send_rate=_sms_send_rate(settings, engine),
        )
    if settings.email_channel == "smtp":
        assert settings.smtp is not None
        email = SmtpEmailChannel(settings.smtp)
    return sms, email


def _shares_rate(engine: Engine) -> bool:
    """Whether the SMS rate limit is shared through the database: on PostgreSQL, where several
    processes (and hosts) may send from one sender. A SQLite database is one host's: each
    process keeps its own pace there."""
    return engine.dialect.name == "postgresql"


def _sms_send_rate(settings: Settings, engine: Engine) -> SendRate:
    """The sender's pace: one token bucket per sender in PostgreSQL, shared by every process
    using the database; else this process's own."""
    assert settings.twilio is not None
    if not _shares_rate(engine):
        return LocalSendRate(settings.sms_rate_limit)
    return SharedSendRate(
        PostgresRateBuckets(engine),
        settings.twilio.sender,
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
