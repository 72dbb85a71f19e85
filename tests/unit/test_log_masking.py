import logging

from reminder_service.entrypoints.log_masking import MaskingFilter, mask


def test_phone_numbers_and_emails_are_masked():
    text = "Twilio 21211: The 'To' number +447700900123 is not valid; also (212) 555-0142"
    assert mask(text) == "Twilio 21211: The 'To' number +*********123 is not valid; also *******142"
    assert mask("bounce for test.patient@example.org") == "bounce for t***@example.org"


def test_ids_dates_and_times_are_left_alone():
    text = "reminder 12345 (day_before/sms) due 2026-12-09T18:00:00+00:00 attempt 2 on 2026-12-09"
    assert mask(text) == text


def test_filter_masks_arguments_and_tracebacks(caplog):  # type: ignore[no-untyped-def]
    logger = logging.getLogger("test.masking")
    caplog.handler.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="test.masking"):
        logger.info("sending to %s", "+12125550142")
        try:
            raise ValueError("bad address jo@example.org")
        except ValueError:
            logger.exception("failed")
    assert "+12125550142" not in caplog.text and "********142" in caplog.text
    assert "jo@example.org" not in caplog.text and "j***@example.org" in caplog.text
