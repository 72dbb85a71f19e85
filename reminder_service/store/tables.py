"""The schema. Alembic migrations in `migrations/` must produce exactly this (a test checks)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from .types import UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("external_id", String(64), nullable=False, unique=True),
    Column("first_name", String(100), nullable=False),
    Column("last_name", String(100), nullable=False),
    Column("mobile", String(20)),  # E.164
    Column("email", String(320)),
    Column("language", String(35), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The basis on which we may text the patient; "" = no SMS consent (email only).
    Column("sms_consent", String(64), nullable=False, server_default="number given for care"),
    Column("deceased", Boolean, nullable=False, server_default=false()),
    Column("do_not_contact", Boolean, nullable=False, server_default=false()),
    # The FHIR Patient's logical id, so an Appointment referring to "Patient/<id>" finds them.
    Column("fhir_id", String(64), index=True),
    # The patient's caregiver (domain.appointment.Caregiver): none when the name is NULL. Copies
    # of the patient's texts go to the mobile only when both booleans are true.
    Column("caregiver_name", String(100)),
    Column("caregiver_mobile", String(20)),  # E.164
    Column("caregiver_relationship", String(64)),
    Column("caregiver_sms_consent", Boolean, nullable=False, server_default=false()),
    Column("caregiver_copies", Boolean, nullable=False, server_default=false()),
)

imports = Table(
    "imports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(64), nullable=False),  # csv, hl7, fhir, api
    Column("label", String(255), nullable=False),  # file name or request id
    Column("started_at", UtcDateTime, nullable=False),
    Column("summary", Text, nullable=False),  # JSON counts
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("external_id", String(64), nullable=False, unique=True),
    Column("clinic_id", String(64), nullable=False),
    Column("patient_id", ForeignKey("patients.id"), nullable=False, index=True),
    Column("protocol_id", String(64)),  # None: no protocol serves this procedure
    Column("procedure", String(32), nullable=False),
    Column("start_at", UtcDateTime, nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("location", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("sedation", String(8), nullable=False),
    Column("anticoagulant", String(8), nullable=False),
    Column("on_chemotherapy", String(8), nullable=False),
    Column("diabetes_on_medication", String(8), nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("booked_at", UtcDateTime, nullable=False),  # first seen
    Column("scheduled_at", UtcDateTime, nullable=False),  # when the current start was set
    Column("updated_at", UtcDateTime, nullable=False),
    # The reminders table holds only what is due within the planning horizon. The plan is a pure
    # function of the appointment and `planned_at` (the `now` it was made with); from
    # `plan_resume_at` on, the rest is added as it comes within the horizon. NULL: all is there.
    Column("planned_at", UtcDateTime),
    Column("plan_resume_at", UtcDateTime, index=True),
    # The patient's replies by SMS: 1 confirms, 2 asks for a new time.
    Column("confirmed_at", UtcDateTime),
    Column("new_time_requested_at", UtcDateTime),
    Column("confirmed_by", String(100)),  # "patient (SMS)" or the staff member who confirmed it
    # When staff were given this appointment to phone because it was not confirmed by its
    # protocol's deadline; set once, by the process that claimed it (services/confirmations.py).
    Column("confirmation_alerted_at", UtcDateTime),
    # When its sender made the latest change applied (HL7 MSH-7): an older message arriving
    # later (an S13 after a newer S15) changes nothing. NULL: no timed source yet (a CSV).
    Column("source_time", UtcDateTime),
    Index("ix_appointments_start_at", "start_at"),
)

# A staff alert is stored as a row of its own "channel" (sent by email to the clinic's
# staff_email): the repository reads it back as a reminder for Recipient.STAFF.
STAFF_CHANNEL = "staff"

reminders = Table(
    "reminders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("appointment_id", ForeignKey("appointments.id"), nullable=False, index=True),
    Column("appointment_version", Integer, nullable=False),
    Column("import_id", ForeignKey("imports.id")),
    Column("step_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("template", String(64), nullable=False),
    Column("nominal_at", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", UtcDateTime),
    Column("claim_token", String(32)),
    Column("sent_at", UtcDateTime),
    Column("provider_id", String(128), index=True),
    Column("last_error", Text),
    Column("language", String(35)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # What the provider later reported (Twilio status callbacks): queued, sent, delivered,
    # undelivered, failed; with its error code.
    Column("delivery_status", String(16)),
    Column("delivery_error", String(16)),
    Column("delivery_updated_at", UtcDateTime),
    # Set on a reminder created because another one failed (SMS -> email, or a staff alert).
    Column("fallback_for", ForeignKey("reminders.id")),
    Column("alert", Text),  # a staff alert's report (its reason column changes as it is sent)
    # A skipped SMS whose step says "merge": its line rides on the next text to the patient.
    Column("merge_into_next", Boolean, nullable=False, server_default=false()),
    Column("merged_into", ForeignKey("reminders.id")),
    # The last attempt whose answer was lost after the request may have reached the provider
    # (a read timeout, a dropped connection): a status callback for it settles the reminder.
    Column("maybe_accepted_at", UtcDateTime),
    # An SMS attempt whose outcome is not known yet, written before the request goes out and
    # cleared once the outcome is known: when the first such attempt began, to which number,
    # and the SHA-256 of its body. Before sending again, the dispatcher asks the provider for a
    # message to that number, since then, with that body (see services/dispatching.py).
    Column("attempt_started_at", UtcDateTime),
    Column("attempt_to", String(20)),
    Column("attempt_sha256", String(64)),
    # "patient", or "caregiver": a copy of the patient's SMS to their caregiver's mobile.
    Column("recipient", String(16), nullable=False, server_default="patient"),
    Index("ix_reminders_status_due_at", "status", "due_at"),
)

# Numbers that must get no SMS: the recipient replied STOP, or the provider says they did.
sms_opt_outs = Table(
    "sms_opt_outs",
    metadata,
    Column("phone", String(20), primary_key=True),  # E.164
    Column("opted_out_at", UtcDateTime, nullable=False),
    Column("source", String(64), nullable=False),  # "twilio error 21610", "reply STOP"
)

# Email addresses that must get no more reminder emails: the recipient unsubscribed (a one-click
# link, a mailto the bounce listener read, or staff honouring an unsubscribe email). Kept
# lower-cased (domain/opt_outs.opt_out_key). SMS to the same patient go on.
email_opt_outs = Table(
    "email_opt_outs",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("opted_out_at", UtcDateTime, nullable=False),
    Column("source", String(64), nullable=False),  # "one-click link", "unsubscribe email", "staff"
)

# Every SMS a patient sent us, once (Twilio may post a webhook twice). The text is kept for
# the clinic's staff to read (free-text replies); it never goes to the logs.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_sid", String(64), nullable=False, unique=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("phone", String(20), nullable=False),  # E.164, as Twilio gives it
    Column("body", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # opt_out, opt_in, help, confirm, new_time, other
    Column("appointment_id", ForeignKey("appointments.id")),  # the one a reply code applied to
    Column("answer", String(32)),  # the reply we sent back (a template name), if any
    # Who dealt with it and when: a person for free text and requests for a new time, else
    # "automatic" (keywords and confirmations, answered by the service).
    Column("handled_at", UtcDateTime),
    Column("handled_by", String(100)),
    Index("ix_inbound_messages_phone_received_at", "phone", "received_at"),
)

# Keys for the HTTP API: only a hash is stored; the key itself is shown once, when created.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256, hex
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

# Staff who sign in to the console: an argon2id hash of the password, never the password.
# A disabled account is kept (its name stays in the audit trail) and can never sign in.
staff_users = Table(
    "staff_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # scheduler | admin
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("appointment_id", ForeignKey("appointments.id"), index=True),
    Column("reminder_id", ForeignKey("reminders.id")),
    Column("event", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text),  # JSON: message version, provider id, counts; never message bodies
)

# The SMS rate limit shared by every process on this database: one token bucket per sender (a
# number or a messaging service), taken from by store/send_rate_buckets.py. Used on PostgreSQL
# only (a SQLite database is one host's, and each process keeps its own pace).
send_rate_buckets = Table(
    "send_rate_buckets",
    metadata,
    Column("sender", String(64), primary_key=True),
    Column("tokens", Double, nullable=False),  # below zero: turns lent against the refill
    Column("refilled_at", UtcDateTime, nullable=False),  # the database's clock
)
