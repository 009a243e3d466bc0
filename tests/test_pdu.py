from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from gsmmodem.pdu import (  # type: ignore[import-untyped, unused-ignore]
    decodeSmsPdu,
    divideTextGsm7,
    encodeSmsSubmitPdu,
)

from callcatch.sms import pdu
from callcatch.sms.pdu import Deliver, PduError, Segments, StatusReport, TooLong

EMOJI = "\U0001f600"  # grinning face, outside the BMP: two UTF-16 units
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joined with ZWJ
PL = "Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144"  # Polish pangram
STAMP = datetime(2024, 3, 9, 14, 5, 30, tzinfo=timezone(timedelta(hours=1)))
NUMBER = "+447700900123"
PLUS2 = timezone(timedelta(hours=2))

# SMS-DELIVER from 23.040-style examples in the wild (with what gsmmodem's tests expect).
HOW_ARE_YOU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07"
TEST2 = "06917228195339040B917228214365F700003130805120618005D4F29C2E03"
AT_COMMANDS = (
    "07915892000000F0040B915892214365F700007040213252242331493A283D0795C3F33C88FE06C9CB6132"
    "885EC6D341EDF27C1E3E97E7207B3A0C0A5241E377BB1D7693E72E"
)
EXTENDED = "06917228195339040B917228214365F70000313062315352800A800D8A5E98D337A910"
AIRTIME = (
    "0591721891F1400781721881F800003160526104848059050003C30101916536FB1DCABEEB2074D85E06"
    "4941B19CAB060319A5C522289C96D3D3ED32286C0FA7D96131BBEC024941B19CAB0603DDD36C36A88C87"
    "A7E565D0DB0D82C55EB0DB4B068BCD5C20"
)
STATUS_DELIVERED = "0006D60B911326880736F4111011719551401110117195714000"
# From a ZTE modem: SMSC field "97F1" is odd but well-formed, the recipient has a "B" nibble.
STATUS_ZTE = "0297F1061C0F910B487228297020F5317062419272803170624192138000"
KNOWN = [HOW_ARE_YOU, TEST2, AT_COMMANDS, EXTENDED, AIRTIME, STATUS_DELIVERED, STATUS_ZTE]

# Pieces for hand-made SMS-DELIVER PDUs: no SMSC, sender +31628870634, a timestamp.
_OA = "0B911326880736F4"
_SCTS = "11101171955140"


def raw_deliver(ud: str, udl: int, *, dcs: int = 0x00, udhi: bool = False) -> str:
    first = 0x44 if udhi else 0x04
    return f"00{first:02X}{_OA}00{dcs:02X}{_SCTS}{udl:02X}{ud}"


def as_deliver(submit: pdu.SubmitPdu) -> Deliver:
    """Turn our SMS-SUBMIT into the SMS-DELIVER the recipient gets, and decode that."""
    raw = bytes.fromhex(submit.hex)
    tpdu = raw[1 + raw[0] :]
    assert len(tpdu) == submit.tpdu_length
    first = tpdu[0]
    assert first & 0x03 == 0x01 and first & 0x18 == 0  # SMS-SUBMIT without validity period
    address_end = 4 + (tpdu[2] + 1) // 2
    pid_dcs, user_data = tpdu[address_end : address_end + 2], tpdu[address_end + 2 :]
    deliver = bytes([first & 0x40]) + tpdu[2:address_end] + pid_dcs + bytes.fromhex(_SCTS)
    result = pdu.decode("00" + (deliver + user_data).hex())
    assert isinstance(result, Deliver)
    return result


def decode_deliver(pdu_hex: str) -> Deliver:
    result = pdu.decode(pdu_hex)
    assert isinstance(result, Deliver)
    return result


def decode_report(pdu_hex: str) -> StatusReport:
    result = pdu.decode(pdu_hex)
    assert isinstance(result, StatusReport)
    return result


# --- normalise ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It\u2019s \u2018ok\u2019", "It's 'ok'"),
        ("\u201cHi\u201d \u201eda\u201c \u201f", '"Hi" "da" "'),
        ("\u00abBonjour\u00a0!\u00bb", '"Bonjour !"'),
        ("9\u20135 \u2014 Mon\u2010Fri \u2212 2\u20113 \u2015", "9-5 - Mon-Fri - 2-3 -"),
        ("Wait\u2026", "Wait..."),
        ("a\u00a0b\u2009c\u202fd\u2007e\tf", "a b c d e f"),
        ("zero\u200bwidth\ufeff\u2060soft\u00adhyphen", "zerowidthsofthyphen"),
        ("stray\u200djoiner\u200e", "strayjoiner"),
        ("Cafe\u0301", "Caf\u00e9"),  # NFC makes a GSM-7 character
        ("`quoted\u00b4", "'quoted'"),
        ("1\u20442", "1/2"),
        ("plain ASCII, {ok} [\u20ac5]", "plain ASCII, {ok} [\u20ac5]"),
    ],
)
def test_normalise_replaces_lookalikes(raw: str, expected: str) -> None:
    assert pdu.normalise(raw) == expected
    assert pdu.normalise(expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Pawe\u0142",
        PL,
        "Thanks " + EMOJI,
        FAMILY + " welcome",
        "\u4f60\u597d\u3000\u4e16\u754c",  # Chinese with an ideographic space
        "\u05e9\u05dc\u05d5\u05dd\u200f!",  # Hebrew with a right-to-left mark
    ],
)
def test_normalise_leaves_genuine_non_gsm_text(text: str) -> None:
    assert pdu.normalise(text) == text


def test_normalise_still_fixes_punctuation_in_ucs2_text() -> None:
    assert (
        pdu.normalise(f"Pawe\u0142 \u2014 \u201cok\u201d {EMOJI}") == f'Pawe\u0142 - "ok" {EMOJI}'
    )


def test_normalised_reply_fits_gsm7() -> None:
    reply = pdu.normalise("Sorry we missed you \u2014 we\u2019ll call back\u2026")
    assert pdu.segments(reply).encoding == "gsm7"


# --- segments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Segments("gsm7", 1, 0)),
        ("a" * 160, Segments("gsm7", 1, 160)),
        ("a" * 161, Segments("gsm7", 2, 161)),
        ("a" * 306, Segments("gsm7", 2, 306)),
        ("a" * 307, Segments("gsm7", 3, 307)),
        ("\u20ac" * 80, Segments("gsm7", 1, 160)),
        ("\u20ac" * 80 + "a", Segments("gsm7", 2, 161)),
        ("[]{}~^\\|", Segments("gsm7", 1, 16)),
        ("\u00a7 @\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7", Segments("gsm7", 1, 12)),
        ("\u0142" * 70, Segments("ucs2", 1, 70)),
        ("\u0142" * 71, Segments("ucs2", 2, 71)),
        ("\u0142" * 134, Segments("ucs2", 2, 134)),
        ("\u0142" * 135, Segments("ucs2", 3, 135)),
        (EMOJI, Segments("ucs2", 1, 2)),
        (EMOJI * 35, Segments("ucs2", 1, 70)),
        (EMOJI * 35 + "a", Segments("ucs2", 2, 71)),
        ("`", Segments("ucs2", 1, 1)),  # not in GSM-7 (gsmmodem puts it where § is)
        ("\u00ff", Segments("ucs2", 1, 1)),
        ("\x1b", Segments("ucs2", 1, 1)),
    ],
)
def test_segments(text: str, expected: Segments) -> None:
    assert pdu.segments(text) == expected


def test_segments_does_not_split_escapes_or_surrogate_pairs() -> None:
    # A euro (ESC + code) cannot straddle the 153-septet boundary, nor an emoji the 67-unit
    # one: 306 septets / 134 units would fit two parts if they could.
    assert pdu.segments("a" * 152 + "\u20ac" * 76).parts == 2
    assert pdu.segments("a" * 152 + "\u20ac" * 77) == Segments("gsm7", 3, 306)
    assert pdu.segments("\u0142" * 66 + EMOJI * 33).parts == 2
    assert pdu.segments("\u0142" * 66 + EMOJI * 34) == Segments("ucs2", 3, 134)


@pytest.mark.parametrize("text", ["a" * 400, "\u20ac" * 200, ("x" * 152 + "{") * 4, "ab]" * 120])
def test_segments_agree_with_gsmmodem_split(text: str) -> None:
    assert pdu.segments(text).parts == len(divideTextGsm7(text))


# --- encode_submit ------------------------------------------------------------------------


def test_encode_submit_matches_known_pdu() -> None:
    [part] = pdu.encode_submit(
        "+27820001111", "Hello World!", reference=0, max_parts=1, status_report=False
    )
    assert part.hex == "0001000B917228001011F100000CC8329BFD065DDF72363904"
    assert part.tpdu_length == 24


@pytest.mark.parametrize("text", ["hi", "hi " + EMOJI, "x" * 200])
def test_encode_submit_with_smsc(text: str) -> None:
    # gsmmodem reports len - 1 as the TPDU length even with an 8-octet SMSC field.
    parts = pdu.encode_submit(NUMBER, text, reference=9, max_parts=2, smsc="+31624000000")
    for part in parts:
        assert part.hex.startswith("07911326040000F0")
        assert part.tpdu_length == len(part.hex) // 2 - 8
        assert int(part.hex[16:18], 16) & 0x23 == 0x21  # SMS-SUBMIT, status report requested
        assert part.hex[18:20] == "09"


@pytest.mark.parametrize(
    "text",
    [
        "Hello, we missed your call. Reply or call back: 020 7946 0958 {open} 9-5 \u20ac",
        "\u00a7 1.2 \u00ff `quoted`",
        "Dzi\u0119kujemy, " + PL,
        "Thanks " + EMOJI + " see you",
        FAMILY,
        "\u4f60\u597d",
        "@" * 8,
    ],
)
def test_encode_submit_round_trip_single(text: str) -> None:
    [part] = pdu.encode_submit(NUMBER, text, reference=1, max_parts=1)
    message = as_deliver(part)
    assert message.text == text
    assert message.sender == NUMBER
    assert message.encoding == pdu.segments(text).encoding
    assert (message.concat_reference, message.concat_total, message.concat_seq) == (None, 1, 1)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("Missed call. " * 40, 4),
        ("a" * 152 + "\u20ac" + "b" * 200, 3),
        ("\u20ac" * 300, 4),
        (PL * 10, 3),
        ("\u0142" * 66 + EMOJI + "x" * 80, 3),
        ((EMOJI + "abc") * 40, 3),
        ("\u00a7`" * 100, 3),
    ],
)
def test_encode_submit_round_trip_multipart(text: str, parts: int) -> None:
    pdus = pdu.encode_submit(NUMBER, text, reference=201, max_parts=parts)
    messages = [as_deliver(p) for p in pdus]
    assert len(messages) == parts == pdu.segments(text).parts
    assert {(m.concat_reference, m.concat_total) for m in messages} == {(201, parts)}
    assert [m.concat_seq for m in messages] == list(range(1, parts + 1))
    assert pdu.join(list(reversed(messages))) == text
    for message in messages:
        assert "\ufffd" not in message.text
        assert pdu.segments(message.text).units <= (153 if message.encoding == "gsm7" else 67)
        assert all(p.tpdu_length <= 13 + 1 + 140 for p in pdus)


def test_encode_submit_keeps_escape_and_emoji_whole_at_boundary() -> None:
    first, second = (
        as_deliver(p)
        for p in pdu.encode_submit(NUMBER, "a" * 152 + "\u20ac" * 5, reference=3, max_parts=2)
    )
    assert first.text == "a" * 152
    assert second.text == "\u20ac" * 5
    first, second = (
        as_deliver(p)
        for p in pdu.encode_submit(NUMBER, "\u0142" * 66 + EMOJI * 3, reference=3, max_parts=2)
    )
    assert first.text == "\u0142" * 66
    assert second.text == EMOJI * 3


@pytest.mark.parametrize(
    "text", ["Hello there", "a" * 400, "\u20ac[x]" * 60, PL, "\u0142" * 200, "\u4f60" * 71]
)
@pytest.mark.parametrize("status_report", [True, False])
def test_own_submit_builder_is_byte_identical_to_gsmmodem(text: str, status_report: bool) -> None:
    # encode_submit hands these texts to gsmmodem; the builder used for the texts gsmmodem
    # gets wrong must produce exactly the same PDUs for the rest.
    encoding, chunks, _ = pdu._plan(text)
    ours = pdu._build_submit(NUMBER, chunks, encoding, 77, b"\x00", status_report)
    theirs = encodeSmsSubmitPdu(NUMBER, text, reference=77, requestStatusReport=status_report)
    assert ours == pdu.encode_submit(
        NUMBER, text, reference=77, max_parts=10, status_report=status_report
    )
    assert [p.hex for p in ours] == [bytes(p.data).hex().upper() for p in theirs]
    assert [p.tpdu_length for p in ours] == [p.tpduLength for p in theirs]


def test_encode_submit_status_report_flag() -> None:
    [on] = pdu.encode_submit(NUMBER, EMOJI, reference=0, max_parts=1)
    [off] = pdu.encode_submit(NUMBER, EMOJI, reference=0, max_parts=1, status_report=False)
    assert int(on.hex[2:4], 16) & 0x20
    assert not int(off.hex[2:4], 16) & 0x20


def test_encode_submit_enforces_max_parts() -> None:
    assert len(pdu.encode_submit(NUMBER, "a" * 306, reference=0, max_parts=2)) == 2
    with pytest.raises(TooLong) as info:
        pdu.encode_submit(NUMBER, "a" * 307, reference=0, max_parts=2)
    assert (info.value.parts, info.value.max_parts) == (3, 2)
    with pytest.raises(TooLong):
        pdu.encode_submit(NUMBER, EMOJI * 36, reference=0, max_parts=1)
    with pytest.raises(TooLong) as info:
        pdu.encode_submit(NUMBER, "a" * 153 * 256, reference=0, max_parts=1000)
    assert (info.value.parts, info.value.max_parts) == (256, 255)
    assert issubclass(TooLong, PduError)


@pytest.mark.parametrize(
    "number",
    [
        "",
        "+",
        "07700900123",
        "447700900123",
        "+0447700900123",
        "+4",
        "+1234567890123456",
        "+44 7700 900123",
        "+44-7700900123",
        "+4477009001a3",
        "+\u0664\u0664\u0667\u0667\u0660\u0660",  # Arabic-Indic digits
        "Shop",
        " +447700900123",
    ],
)
def test_encode_submit_rejects_invalid_numbers(number: str) -> None:
    with pytest.raises(PduError):
        pdu.encode_submit(number, "hi", reference=0, max_parts=1)
    with pytest.raises(PduError):
        pdu.encode_submit(NUMBER, "hi", reference=0, max_parts=1, smsc=number)


@pytest.mark.parametrize(("reference", "max_parts"), [(256, 1), (-1, 1), (0, 0), (0, -3)])
def test_encode_submit_rejects_bad_arguments(reference: int, max_parts: int) -> None:
    # PduError, not ValueError: the outbox marks the text failed instead of crashing.
    with pytest.raises(PduError):
        pdu.encode_submit(NUMBER, "hi", reference=reference, max_parts=max_parts)


def test_encode_submit_rejects_empty_text() -> None:
    with pytest.raises(PduError, match="empty"):
        pdu.encode_submit(NUMBER, "", reference=0, max_parts=1)


# --- decode: SMS-DELIVER ------------------------------------------------------------------


def test_decode_classic_example() -> None:
    message = decode_deliver(HOW_ARE_YOU)
    assert message.sender == "+31641600986"
    assert message.text == "How are you?"
    # "08": sign bit set with 0 quarters, i.e. UTC.
    assert message.sent_at == datetime(2002, 8, 26, 19, 37, 41, tzinfo=UTC)
    assert (message.concat_reference, message.concat_total, message.concat_seq) == (None, 1, 1)
    assert (message.encoding, message.binary, message.data_hex) == ("gsm7", False, "")


@pytest.mark.parametrize(
    ("pdu_hex", "sender", "text", "sent_at"),
    [
        (TEST2, "+27821234567", "Test2", datetime(2013, 3, 8, 15, 2, 16, tzinfo=PLUS2)),
        (
            AT_COMMANDS,
            "+85291234567",
            "It is easy to read text messages via AT commands.",
            datetime(2007, 4, 12, 23, 25, 42, tzinfo=timezone(timedelta(hours=8))),
        ),
        (
            EXTENDED,
            "+27821234567",
            "@{t\u00e9st}!",
            datetime(2013, 3, 26, 13, 35, 25, tzinfo=PLUS2),
        ),
    ],
)
def test_decode_known_delivers(pdu_hex: str, sender: str, text: str, sent_at: datetime) -> None:
    message = decode_deliver(pdu_hex)
    assert (message.sender, message.text) == (sender, text)
    assert message.sent_at == sent_at
    assert message.sent_at.utcoffset() == sent_at.utcoffset()
    library = decodeSmsPdu(pdu_hex)
    assert (library["number"], library["text"]) == (sender, text)
    assert library["time"] == message.sent_at


def test_decode_udh_gsm7_with_fill_bits() -> None:
    message = decode_deliver(AIRTIME)
    assert message.sender == "2781188"
    assert message.text.startswith("Hello!You have R 19.50 FREE airtime available.")
    assert message.text.endswith("expire on 01/07/2013. ")
    assert (message.concat_reference, message.concat_total, message.concat_seq) == (195, 1, 1)
    assert pdu.join([message]) == message.text


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("text", ["Call me back " * 30, PL * 9, (EMOJI + "\u20ac") * 50])
def test_decode_multipart_deliver(text: str, wide: bool) -> None:
    reference = 0xBEEF if wide else 0xBE
    hexes = pdu.encode_deliver(
        NUMBER, text, sent_at=STAMP, reference=reference, wide_reference=wide
    )
    messages = [decode_deliver(h) for h in hexes]
    assert len(messages) > 1
    assert {m.concat_reference for m in messages} == {reference}
    assert [(m.concat_seq, m.concat_total) for m in messages] == [
        (seq, len(hexes)) for seq in range(1, len(hexes) + 1)
    ]
    assert all(m.sent_at == STAMP for m in messages)
    assert pdu.join(messages[::-1]) == text


def test_decode_16bit_reference_known_header() -> None:
    # UDH 06 08 04 0180 04 02: 16-bit reference 384, part 2 of 4; 7 octets = 8 septets.
    header = bytes.fromhex("06080401800402")
    body = pdu._pack_septets(pdu._gsm7_encode("Hi"), 8 * 7)
    ud_bytes = (int.from_bytes(header, "little") | body).to_bytes(9, "little")
    message = decode_deliver(raw_deliver(ud_bytes.hex(), 8 + 2, udhi=True))
    assert message.text == "Hi"
    assert (message.concat_reference, message.concat_total, message.concat_seq) == (384, 4, 2)


def test_decode_ucs2_with_surrogate_pairs() -> None:
    text = f"Cze\u015b\u0107 {EMOJI}{FAMILY}"
    [hex_pdu] = pdu.encode_deliver(NUMBER, text, sent_at=STAMP)
    message = decode_deliver(hex_pdu)
    assert (message.text, message.encoding) == (text, "ucs2")
    ud = text.encode("utf-16-be").hex()
    assert decode_deliver(raw_deliver(ud, len(ud) // 2, dcs=0x08)).text == text


@pytest.mark.parametrize(
    ("ud", "expected"),
    [
        ("D83D0041", "\ufffdA"),  # high surrogate without its low half
        ("DE000041", "\ufffdA"),  # low surrogate alone
        ("0041D83D", "A\ufffd"),  # pair cut at the end
        ("004100", "A\ufffd"),  # odd number of octets
    ],
)
def test_decode_invalid_utf16_keeps_message(ud: str, expected: str) -> None:
    message = decode_deliver(raw_deliver(ud, len(ud) // 2, dcs=0x08))
    assert message.text == expected


@pytest.mark.parametrize(("dcs", "encoding"), [(0x00, "gsm7"), (0x08, "ucs2"), (0x18, "ucs2")])
def test_decode_data_coding_groups(dcs: int, encoding: str) -> None:
    ud = "0048006900" if encoding == "ucs2" else "C834"
    udl = 4 if encoding == "ucs2" else 2
    message = decode_deliver(raw_deliver(ud[:8], udl, dcs=dcs))
    assert (message.text, message.encoding) == ("Hi", encoding)


def test_decode_data_coding_group_f() -> None:
    assert decode_deliver(raw_deliver("C834", 2, dcs=0xF0)).text == "Hi"
    binary = decode_deliver(raw_deliver("C834", 2, dcs=0xF5))  # 8-bit, class 1
    assert (binary.binary, binary.text, binary.data_hex) == (True, "", "C834")


def test_decode_ucs2_message_waiting_group() -> None:
    assert decode_deliver(raw_deliver("00480069", 4, dcs=0xE0)).text == "Hi"


def test_decode_binary_wap_push() -> None:
    payload = bytes.fromhex("0B05040B8423F00003AB0201") + b"\x01\x06\x6a\x00"
    [hex_pdu] = pdu.encode_deliver("+4915112345678", sent_at=STAMP, data=payload)
    message = decode_deliver(hex_pdu)
    assert (message.binary, message.encoding, message.text) == (True, "8bit", "")
    assert message.data_hex == payload.hex().upper()
    with pytest.raises(PduError, match="binary"):
        pdu.join([message])


def test_decode_binary_with_udh_keeps_payload_after_header() -> None:
    message = decode_deliver(raw_deliver("0605040B8423F0DEADBEEF", 11, dcs=0x04, udhi=True))
    assert (message.binary, message.data_hex) == (True, "DEADBEEF")


@pytest.mark.parametrize("name", ["Shop&Co", "Example", "BANK", "Abcdefghijk", "A{b}"])
def test_decode_alphanumeric_sender(name: str) -> None:
    [hex_pdu] = pdu.encode_deliver(name, "Your code is 1234", sent_at=STAMP)
    assert decode_deliver(hex_pdu).sender == name


def test_decode_alphanumeric_sender_with_octet_rounded_length() -> None:
    # "Example" packed into 7 octets, length given as 14 semi-octets (not 13): no trailing "@".
    hex_pdu = pdu.encode_deliver("Example", "x", sent_at=STAMP)[0]
    assert hex_pdu[4:8] == "0DD0"
    assert decode_deliver(hex_pdu[:4] + "0E" + hex_pdu[6:]).sender == "Example"


def test_decode_national_sender_and_timezones() -> None:
    for offset in (timedelta(hours=-5), timedelta(hours=5, minutes=45), timedelta(0)):
        sent = datetime(2031, 12, 31, 23, 59, 59, tzinfo=timezone(offset))
        [hex_pdu] = pdu.encode_deliver("0612345678", "x", sent_at=sent)
        message = decode_deliver(hex_pdu)
        assert message.sender == "0612345678"
        assert message.sent_at == sent
        assert message.sent_at.utcoffset() == offset


def test_decode_invalid_timestamp_keeps_message() -> None:
    bad_month = raw_deliver("C834", 2).replace(_SCTS, "11311171955140")
    message = decode_deliver(bad_month)
    assert (message.text, message.sent_at) == ("Hi", None)
    non_bcd = raw_deliver("C834", 2).replace(_SCTS, "11101171955A40")
    assert decode_deliver(non_bcd).sent_at is None


def test_encode_deliver_decodes_with_gsmmodem() -> None:
    [hex_pdu] = pdu.encode_deliver(NUMBER, "Hello from the simulator", sent_at=STAMP)
    library = decodeSmsPdu(hex_pdu)
    assert (library["type"], library["number"]) == ("SMS-DELIVER", NUMBER)
    assert library["text"] == "Hello from the simulator"
    assert library["time"] == STAMP


@pytest.mark.parametrize(
    ("ie", "expected"),
    [
        ("00030A0000", (None, 1, 1)),  # total 0: ignore the IE
        ("00030A0300", (None, 1, 1)),  # seq 0
        ("00030A0304", (None, 1, 1)),  # seq > total
        ("00030A0303", (10, 3, 3)),
        ("0804FFFF0201", (0xFFFF, 2, 1)),
        ("0201FF00030A0201", (10, 2, 1)),  # an unknown IE before it is skipped
    ],
)
def test_decode_concatenation_header_values(
    ie: str, expected: tuple[int | None, int, int]
) -> None:
    header = bytes.fromhex(f"{len(ie) // 2:02X}{ie}")
    skip = (len(header) * 8 + 6) // 7
    value = int.from_bytes(header, "little") | pdu._pack_septets(pdu._gsm7_encode("ok"), skip * 7)
    udl = skip + 2
    ud = value.to_bytes((udl * 7 + 7) // 8, "little").hex()
    message = decode_deliver(raw_deliver(ud, udl, udhi=True))
    assert message.text == "ok"
    assert (message.concat_reference, message.concat_total, message.concat_seq) == expected


# --- decode: SMS-STATUS-REPORT ------------------------------------------------------------


def test_decode_known_status_report() -> None:
    report = decode_report(STATUS_DELIVERED)
    assert (report.reference, report.recipient, report.status) == (214, "+31628870634", 0)
    assert (report.delivered, report.final) == (True, True)
    assert report.discharged_at == datetime(
        2011, 1, 11, 17, 59, 17, tzinfo=timezone(timedelta(hours=1))
    )
    assert decodeSmsPdu(STATUS_DELIVERED)["reference"] == 214


def test_decode_zte_status_report() -> None:
    report = decode_report(STATUS_ZTE)
    assert (report.reference, report.status, report.delivered) == (28, 0, True)
    assert report.recipient == "+#08427829207025"


@pytest.mark.parametrize(
    ("status", "delivered", "final"),
    [
        (0x00, True, True),  # received by the SME
        (0x01, True, True),  # forwarded, delivery unconfirmed
        (0x20, False, False),  # congestion, still trying
        (0x30, False, False),
        (0x41, False, True),  # incompatible destination
        (0x45, False, True),
        (0x62, False, True),  # temporary error, SC gave up
        (0x80, False, True),
    ],
)
def test_decode_status_reports(status: int, delivered: bool, final: bool) -> None:
    later = STAMP + timedelta(seconds=42)
    hex_pdu = pdu.encode_status_report(NUMBER, 17, status, sent_at=STAMP, discharged_at=later)
    report = decode_report(hex_pdu)
    assert report == StatusReport(17, NUMBER, status, delivered, final, later)


def test_decode_status_report_with_optional_parameters() -> None:
    hex_pdu = pdu.encode_status_report(
        NUMBER, 5, 0, sent_at=STAMP, discharged_at=STAMP, smsc="+31624000000"
    )
    assert decode_report(hex_pdu + "00").reference == 5
    assert decode_report(hex_pdu + "07000000").status == 0


# --- decode: garbage ----------------------------------------------------------------------

VALID_DELIVER = pdu.encode_deliver(NUMBER, "A{b}", sent_at=STAMP)[0]


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "0",
        "00",
        "0004",
        "zz",
        HOW_ARE_YOU[:-1],  # odd length
        HOW_ARE_YOU.replace("F0", "G0", 1),  # not hex
        HOW_ARE_YOU[:20] + " " + HOW_ARE_YOU[20:],  # whitespace inside
        "0x" + HOW_ARE_YOU,
        HOW_ARE_YOU + "00",  # trailing bytes
        HOW_ARE_YOU[:-2],  # truncated user data
        "FF" + HOW_ARE_YOU[2:],  # SMSC length beyond the PDU
        "0001000B917228001011F100000CC8329BFD065DDF72363904",  # SMS-SUBMIT
        "0003000B917228001011F100000CC8329BFD065DDF72363904",  # reserved TP-MTI
        raw_deliver("C834", 2).replace("0B91", "1591"),  # address longer than 20 digits
        raw_deliver("C834", 2).replace("0B911326880736F4", "0B911326F80736F4"),  # F inside
        raw_deliver("00" * 141, 141, dcs=0x08),  # UCS-2 longer than 140 octets
        raw_deliver("00" * 141, 161),  # GSM-7 longer than 160 septets
        raw_deliver("", 0, udhi=True),  # header announced, no user data
        raw_deliver("0A00030A0201", 6, dcs=0x04, udhi=True),  # UDH length beyond the data
        raw_deliver("0500040A020141", 7, dcs=0x04, udhi=True),  # IE overruns the UDH
        raw_deliver("0600040A020141", 7, dcs=0x04, udhi=True),  # 8-bit concat IE of 4 octets
        raw_deliver("050803FFFF01", 6, dcs=0x04, udhi=True),  # 16-bit concat IE of 3 octets
        raw_deliver("0500030A0201", 3, udhi=True),  # GSM-7 UDH longer than the septets
        STATUS_DELIVERED[:-2],  # status report without TP-ST
        STATUS_DELIVERED[:30],
    ],
)
def test_decode_rejects_garbage(garbage: str) -> None:
    with pytest.raises(PduError):
        pdu.decode(garbage)


@pytest.mark.parametrize("value", [None, 42, b"0004", ["00"]])
def test_decode_rejects_non_strings(value: object) -> None:
    with pytest.raises(PduError):
        pdu.decode(value)  # type: ignore[arg-type]


def test_decode_accepts_lowercase_and_surrounding_whitespace() -> None:
    assert decode_deliver(f"  {HOW_ARE_YOU.lower()}\r\n").text == "How are you?"


@pytest.mark.parametrize("source", [*KNOWN, VALID_DELIVER])
def test_every_truncation_raises_pdu_error(source: str) -> None:
    for end in range(len(source) - 1):
        with pytest.raises(PduError):
            pdu.decode(source[:end])


def _decode_or_error(candidate: str) -> None:
    with contextlib.suppress(PduError):
        pdu.decode(candidate)


@pytest.mark.parametrize("source", [*KNOWN, VALID_DELIVER, raw_deliver("D83D0041", 4, dcs=8)])
def test_mutations_only_ever_raise_pdu_error(source: str) -> None:
    rng = random.Random(source)
    octets = bytearray.fromhex(source)
    for position in range(len(octets)):
        for value in (0x00, 0xFF, 0x40, 0x1B, rng.randrange(256)):
            mutated = bytearray(octets)
            mutated[position] = value
            _decode_or_error(mutated.hex())


def test_random_hex_only_ever_raises_pdu_error() -> None:
    rng = random.Random(20240309)
    for _ in range(3000):
        _decode_or_error(rng.randbytes(rng.randrange(1, 60)).hex())


# --- join ---------------------------------------------------------------------------------

LONG = "We missed your call and will ring you back within the hour. " * 6
PARTS = [decode_deliver(h) for h in pdu.encode_deliver(NUMBER, LONG, sent_at=STAMP, reference=9)]


def test_join_orders_parts() -> None:
    assert len(PARTS) == 3
    assert pdu.join([PARTS[2], PARTS[0], PARTS[1]]) == LONG


def test_join_single_message() -> None:
    assert pdu.join([decode_deliver(HOW_ARE_YOU)]) == "How are you?"


def test_join_tolerates_identical_redelivery() -> None:
    assert pdu.join([*PARTS, PARTS[1]]) == LONG


@pytest.mark.parametrize(
    "parts",
    [
        [],
        PARTS[:2],
        [PARTS[0], PARTS[2]],
        [PARTS[0], PARTS[0], PARTS[0]],
        [*PARTS, decode_deliver(HOW_ARE_YOU)],
        [decode_deliver(HOW_ARE_YOU), decode_deliver(TEST2)],
    ],
)
def test_join_rejects_missing_or_mixed_parts(parts: list[Deliver]) -> None:
    with pytest.raises(PduError):
        pdu.join(parts)


def test_join_rejects_conflicting_duplicates_and_other_messages() -> None:
    other = [
        decode_deliver(h)
        for h in pdu.encode_deliver(NUMBER, LONG.upper(), sent_at=STAMP, reference=9)
    ]
    with pytest.raises(PduError, match="different parts"):
        pdu.join([*PARTS, other[1]])
    elsewhere = [
        decode_deliver(h)
        for h in pdu.encode_deliver("+15550001111", LONG, sent_at=STAMP, reference=9)
    ]
    with pytest.raises(PduError, match="different messages"):
        pdu.join([PARTS[0], elsewhere[1], PARTS[2]])
    renumbered = [
        decode_deliver(h) for h in pdu.encode_deliver(NUMBER, LONG, sent_at=STAMP, reference=10)
    ]
    with pytest.raises(PduError, match="different messages"):
        pdu.join([PARTS[0], renumbered[1], PARTS[2]])


# --- encode_deliver / encode_status_report inputs -----------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sender": ""},
        {"sender": "Far too long a name"},
        {"sender": "\u0141\u00f3d\u017a"},
        {"sent_at": datetime(2024, 1, 1)},  # noqa: DTZ001 - naive on purpose
        {"sent_at": datetime(1999, 1, 1, tzinfo=UTC)},
        {"sent_at": datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=7)))},
        {"data": b"x" * 141},
        {"data": b"x", "text": "and text"},
        {"reference": 256},
        {"reference": 70000, "wide_reference": True},
    ],
)
def test_encode_deliver_rejects_bad_input(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"sender": NUMBER, "text": "hi", "sent_at": STAMP} | kwargs
    with pytest.raises(PduError):
        pdu.encode_deliver(**arguments)  # type: ignore[arg-type]


def test_encode_status_report_rejects_bad_input() -> None:
    with pytest.raises(PduError):
        pdu.encode_status_report(NUMBER, 256, 0, sent_at=STAMP, discharged_at=STAMP)
    with pytest.raises(PduError):
        pdu.encode_status_report("", 1, 0, sent_at=STAMP, discharged_at=STAMP)
