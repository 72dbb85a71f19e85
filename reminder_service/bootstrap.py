"""The composition root: the one place that builds the service's parts from settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import Engine

from .catalog import Catalog
from .channels.outbox import OutboxChannel
from .clock import Clock, system_clock
from .configuration.clinics import load_clinics
from .configuration.protocols import load_protocols
from .rendering import Renderer
from .services.dispatching import DispatchPolicy, DispatchService
from .services.importing import ImportService
from .services.materializing import Materializer
from .settings import Settings
from .store.engine import make_engine, migrate
from .template_layout import missing_parts


@dataclass(frozen=True)
class Service:
    settings: Settings
    engine: Engine
    catalog: Catalog
    renderer: Renderer
    importer: ImportService
    dispatcher: DispatchService
    materializer: Materializer
    clock: Clock


def load_catalog(settings: Settings) -> Catalog:
    """Clinics and protocols, validated; raises ConfigError listing every problem."""
    clinics = load_clinics(settings.config_dir / "clinics.yaml")
    protocols = load_protocols(
        settings.config_dir / "protocols", partial(missing_parts, settings.templates_dir)
    )
    return Catalog(protocols=tuple(protocols), clinics=clinics)


def build(settings: Settings, clock: Clock = system_clock) -> Service:
    catalog = load_catalog(settings)
    engine = make_engine(settings.database_url)
    migrate(engine)
    renderer = Renderer(settings.templates_dir)
    outbox = OutboxChannel(settings.outbox_dir, settings.email_from)
    horizon = timedelta(hours=settings.planning_horizon_hours)
    policy = DispatchPolicy(
        lease=timedelta(seconds=settings.lease_seconds), batch=settings.dispatch_batch
    )
    return Service(
        settings=settings,
        engine=engine,
        catalog=catalog,
        renderer=renderer,
        importer=ImportService(engine, catalog, clock, horizon),
        dispatcher=DispatchService(engine, catalog, renderer, outbox, outbox, clock, policy),
        materializer=Materializer(engine, catalog, clock, horizon),
        clock=clock,
    )
