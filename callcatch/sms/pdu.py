"""SMS PDUs (3GPP TS 23.040, alphabets from TS 23.038) as the modem takes and gives them.

Sending: ``normalise`` a reply, check its cost with ``segments``, build the AT+CMGS PDUs with
``encode_submit``. Receiving: ``decode`` what +CMT/+CMGL/+CDS hand over and ``join`` the parts of a
long message. ``encode_deliver`` and ``encode_status_report`` build the PDUs a network would send,
for a modem simulator and tests.

python-gsmmodem-new's ``gsmmodem.pdu`` does the SMS-SUBMIT encoding when it gets the text right;
the gaps closed here (its 0.13 behaviour):

* its GSM-7 table has "`" at 0x5F where 23.038 has "§" (a "`" arrives as "§");
* ``encodeGsm7("ÿ")`` raises TypeError (a broken table entry), crashing ``encodeSmsSubmitPdu``;
* "\\x1b" counts as a GSM-7 character, so ESC would be sent raw;
* UCS-2 outside the BMP (emoji) raises ValueError instead of using UTF-16 surrogate pairs, and
  UCS-2 lengths and splits count code points, not UTF-16 units;
* its TPDU length is wrong (counts the SMSC address) when an SMSC is given;
* a reference above 255 (which would select a 16-bit concatenation reference) overflows TP-MR
  (ValueError), and the parts would not fit anyway: it keeps 153 septets / 67 units per part
  where a 7-octet header leaves 152 / 66, and misstates the GSM-7 TP-UDL; so only 8-bit
  references are sent;
* ``decodeSmsPdu`` raises StopIteration on some truncated input and silently returns partial
  text on other, ignores trailing bytes, leaves surrogate pairs as lone surrogates, reads the
  data coding groups 1110 (UCS-2) and 1111 (8-bit) as GSM-7, drops a trailing "@" after a
  UDH (it unpacks by octets, not by TP-UDL) and gives 8-bit data as text. Decoding is
  therefore done here, with its UDH information element parser and alphabet tables.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from gsmmodem.exceptions import EncodingError  # type: ignore[import-untyped, unused-ignore]
from gsmmodem.pdu import (  # type: ignore[import-untyped, unused-ignore]
    GSM7_BASIC,
    GSM7_EXTENDED,
    InformationElement,
    encodeSemiOctets,
    encodeSmsSubmitPdu,
)

Encoding = Literal["gsm7", "ucs2"]


class PduError(Exception):
    """The input cannot be encoded, or the PDU cannot be decoded."""


class TooLong(PduError):
    """The text needs more SMS parts than allowed."""

    def __init__(self, parts: int, max_parts: int) -> None:
        super().__init__(f"message needs {parts} SMS parts, at most {max_parts} allowed")
        self.parts = parts
        self.max_parts = max_parts


@dataclass(frozen=True)
class Segments:
    encoding: Encoding
    parts: int
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)


@dataclass(frozen=True)
class SubmitPdu:
    hex: str  # with the SMSC field in front, as AT+CMGS takes it
    tpdu_length: int  # the <length> of AT+CMGS=<length>: octets without the SMSC field


@dataclass(frozen=True)
class Deliver:
    sender: str  # +international, national digits or an alphanumeric sender name
    text: str  # "" for binary messages
    sent_at: datetime | None  # SMSC timestamp, None if the PDU carries an invalid one
    concat_reference: int | None  # None (with total 1, seq 1) for a message on its own
    concat_total: int
    concat_seq: int
    encoding: str  # gsm7 | ucs2 | 8bit
    binary: bool  # 8-bit data (WAP push, compressed text): the payload is in data_hex
    data_hex: str  # user data after the header, upper-case hex; "" for text


@dataclass(frozen=True)
class StatusReport:
    reference: int  # TP-MR of the reported message, as +CMGS returned it
    recipient: str
    status: int  # TP-ST
    delivered: bool  # 0x00-0x1F: transaction completed
    final: bool  # False only for 0x20-0x3F: temporary error, the SMSC keeps trying
    discharged_at: datetime | None


# --- GSM 7-bit alphabet -------------------------------------------------------------------

_ESC = 0x1B
_GSM7_BASIC: str = GSM7_BASIC.replace("`", "§")
_GSM7_CODE = {ch: code for code, ch in enumerate(_GSM7_BASIC) if code != _ESC}
_GSM7_EXT_CODE = {ch: ord(code) for ch, code in GSM7_EXTENDED.items() if isinstance(code, str)}
_GSM7_EXT_CHAR = {code: ch for ch, code in _GSM7_EXT_CODE.items()} | {0x0A: "\f"}
# Characters gsmmodem misclassifies or misencodes: texts free of them (and of non-BMP
# characters) are encoded by encodeSmsSubmitPdu, the rest by _build_submit.
_LIBRARY_TROUBLE = frozenset("§`ÿ\x1b")


def _gsm7_costs(text: str) -> list[int] | None:
    costs = []
    for ch in text:
        if ch in _GSM7_CODE:
            costs.append(1)
        elif ch in _GSM7_EXT_CODE:
            costs.append(2)
        else:
            return None
    return costs


def _gsm7_encode(text: str) -> list[int]:
    codes: list[int] = []
    for ch in text:
        if ch in _GSM7_CODE:
            codes.append(_GSM7_CODE[ch])
        else:
            codes += (_ESC, _GSM7_EXT_CODE[ch])
    return codes


def _gsm7_decode(codes: Sequence[int]) -> str:
    out: list[str] = []
    escaped = False
    for code in codes:
        if escaped:
            # 23.038: an unknown extension shows the basic character; ESC ESC shows a space.
            out.append(" " if code == _ESC else _GSM7_EXT_CHAR.get(code, _GSM7_BASIC[code]))
            escaped = False
        elif code == _ESC:
            escaped = True
        else:
            out.append(_GSM7_BASIC[code])
    return "".join(out)


def _pack_septets(codes: Sequence[int], bit_offset: int = 0) -> int:
    return sum(code << (bit_offset + 7 * i) for i, code in enumerate(codes))


def _unpack_septets(data: bytes, count: int) -> list[int]:
    value = int.from_bytes(data, "little")
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


# --- normalise / segments -----------------------------------------------------------------

_LOOKALIKES = str.maketrans(
    {
        # curly, low-9 and reversed single quotes, prime, single guillemets, acute, grave
        **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2039\u203a\u00b4`", "'"),
        # curly, low-9 and reversed double quotes, double prime, guillemets
        **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
        # hyphen, non-breaking hyphen, figure/en/em dash, bar, minus, hyphen bullet,
        # small em dash, small and fullwidth hyphen-minus
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043", "-"),
        **dict.fromkeys("\ufe58\ufe63\uff0d", "-"),
        # tab, no-break, en/em/thin/hair and other fixed-width spaces
        **dict.fromkeys("\t\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006", " "),
        **dict.fromkeys("\u2007\u2008\u2009\u200a\u202f\u205f", " "),
        # soft hyphen, zero-width space, word joiner, BOM / zero-width no-break space
        **dict.fromkeys("\u00ad\u200b\u2060\ufeff", None),
        "\u2026": "...",  # ellipsis
        "\u2044": "/",  # fraction slash
    }
)
# Joiners and direction marks shape emoji sequences and RTL/Indic text: drop them only when
# nothing else in the text needs UCS-2, i.e. when they are stray and would force it.
_JOINERS = str.maketrans(dict.fromkeys("\u200c\u200d\u200e\u200f", None))


def normalise(text: str) -> str:
    """Replace typographic look-alikes with GSM-7 characters; keep genuinely non-GSM text."""
    text = unicodedata.normalize("NFC", text).translate(_LOOKALIKES)
    stripped = text.translate(_JOINERS)
    return stripped if _gsm7_costs(stripped) is not None else text


# (single, per part with an 8-bit concatenation header, with a 16-bit one)
_LIMITS: dict[Encoding, tuple[int, int, int]] = {"gsm7": (160, 153, 152), "ucs2": (70, 67, 66)}


def _plan(text: str, wide: bool = False) -> tuple[Encoding, list[str], int]:
    """Encoding, parts and total units; characters are never split, so neither are escapes
    nor surrogate pairs. ``wide``: parts carry a 16-bit concatenation reference."""
    encoding: Encoding = "gsm7"
    costs = _gsm7_costs(text)
    if costs is None:
        encoding = "ucs2"
        costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    units = sum(costs)
    single, narrow_multi, wide_multi = _LIMITS[encoding]
    multi = wide_multi if wide else narrow_multi
    if units <= single:
        return encoding, [text], units
    chunks: list[str] = []
    start = used = 0
    for i, cost in enumerate(costs):
        if used + cost > multi:
            chunks.append(text[start:i])
            start, used = i, 0
        used += cost
    chunks.append(text[start:])
    return encoding, chunks, units


def segments(text: str) -> Segments:
    """How many SMS parts ``text`` needs as it is (an empty text still takes one SMS)."""
    encoding, chunks, units = _plan(text)
    return Segments(encoding, len(chunks), units)


# --- encoding -----------------------------------------------------------------------------

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_DCS = {"gsm7": 0x00, "8bit": 0x04, "ucs2": 0x08}
_MAX_PARTS = 255  # the concatenation header counts parts in one octet


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise PduError(f"{name} must be {low}..{high}, got {value}")


def _e164_digits(number: str, what: str) -> str:
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise PduError(f"{what} is not an E.164 number (+ and 2-15 digits): {number!r}")
    return number[1:]


def _smsc_field(smsc: str | None) -> bytes:
    if smsc is None:
        return b"\x00"  # the modem uses its configured SMSC
    digits = bytes(encodeSemiOctets(_e164_digits(smsc, "SMSC")))
    return bytes([len(digits) + 1, 0x91]) + digits


def _address_field(address: str) -> bytes:
    """TP-OA/TP-DA/TP-RA: +international, plain digits or an alphanumeric sender name."""
    if isinstance(address, str) and _E164.fullmatch(address):
        digits, toa = address[1:], 0x91
    elif isinstance(address, str) and _DIGITS.fullmatch(address):
        digits, toa = address, 0x81
    else:
        return _alphanumeric_field(address)
    return bytes([len(digits), toa]) + bytes(encodeSemiOctets(digits))


def _alphanumeric_field(name: str) -> bytes:
    if not isinstance(name, str) or not 1 <= len(name) <= 11 or _gsm7_costs(name) is None:
        raise PduError(f"not a number or an alphanumeric sender (1-11 GSM chars): {name!r}")
    codes = _gsm7_encode(name)
    if len(codes) > 11:
        raise PduError(f"alphanumeric sender too long: {name!r}")
    octets = (len(codes) * 7 + 7) // 8
    packed = _pack_septets(codes).to_bytes(octets, "little")
    return bytes([(len(codes) * 7 + 3) // 4, 0xD0]) + packed


def _concat_ie(reference: int, total: int, seq: int, wide: bool) -> bytes:
    if wide:
        return bytes([0x08, 4, reference >> 8, reference & 0xFF, total, seq])
    return bytes([0x00, 3, reference, total, seq])


def _user_data(payload: str | bytes, encoding: str, udh: bytes) -> tuple[int, bytes]:
    """TP-UDL and TP-UD; GSM-7 septets start after the header and its fill bits."""
    header = bytes([len(udh)]) + udh if udh else b""
    if isinstance(payload, bytes) or encoding != "gsm7":
        body = payload if isinstance(payload, bytes) else payload.encode("utf-16-be")
        return len(header) + len(body), header + body
    codes = _gsm7_encode(payload)
    skip = (len(header) * 8 + 6) // 7
    value = int.from_bytes(header, "little") | _pack_septets(codes, skip * 7)
    septets = skip + len(codes)
    return septets, value.to_bytes((septets * 7 + 7) // 8, "little")


def _parts(text: str, max_parts: int, wide: bool = False) -> tuple[Encoding, list[str]]:
    encoding, chunks, _ = _plan(text, wide)
    limit = min(max_parts, _MAX_PARTS)
    if len(chunks) > limit:
        raise TooLong(len(chunks), limit)
    return encoding, chunks


def encode_submit(
    number: str,
    text: str,
    *,
    reference: int,
    max_parts: int,
    smsc: str | None = None,
    status_report: bool = True,
) -> list[SubmitPdu]:
    """SMS-SUBMIT PDUs for ``text`` to the E.164 ``number``, one per part.

    ``text`` is sent as given (call ``normalise`` first). ``reference`` (0-255) is the
    concatenation reference and also goes into TP-MR, which most modems replace. Raises
    TooLong instead of truncating, PduError for an invalid number, SMSC, argument or empty text.
    """
    _e164_digits(number, "number")
    smsc_field = _smsc_field(smsc)
    if not isinstance(text, str) or not text:
        raise PduError("empty message")
    _check_range("reference", reference, 0, 255)
    if max_parts < 1:
        raise PduError(f"max_parts must be at least 1, got {max_parts}")
    encoding, chunks = _parts(text, max_parts)
    if _LIBRARY_TROUBLE.isdisjoint(text) and all(ord(ch) <= 0xFFFF for ch in text):
        return _library_submit(number, text, reference, smsc, status_report)
    return _build_submit(number, chunks, encoding, reference, smsc_field, status_report)


def _library_submit(
    number: str, text: str, reference: int, smsc: str | None, status_report: bool
) -> list[SubmitPdu]:
    try:
        pdus = encodeSmsSubmitPdu(
            number, text, reference=reference, smsc=smsc, requestStatusReport=status_report
        )
    except (ValueError, TypeError, EncodingError) as exc:
        raise PduError(f"cannot encode message: {exc}") from exc
    return [_submit_pdu(bytes(p.data)) for p in pdus]


def _submit_pdu(data: bytes) -> SubmitPdu:
    # gsmmodem's tpduLength is len - 1, wrong whenever an SMSC address is given.
    return SubmitPdu(data.hex().upper(), len(data) - 1 - data[0])


def _build_submit(
    number: str,
    chunks: Sequence[str],
    encoding: Encoding,
    reference: int,
    smsc_field: bytes,
    status_report: bool,
) -> list[SubmitPdu]:
    """Same layout as gsmmodem's encodeSmsSubmitPdu, for the texts it gets wrong."""
    multi = len(chunks) > 1
    first = 0x01 | (0x20 if status_report else 0) | (0x40 if multi else 0)
    head = bytes([first, reference]) + _address_field(number) + bytes([0x00, _DCS[encoding]])
    pdus = []
    for seq, chunk in enumerate(chunks, 1):
        udh = _concat_ie(reference, len(chunks), seq, wide=False) if multi else b""
        udl, ud = _user_data(chunk, encoding, udh)
        tpdu = head + bytes([udl]) + ud
        pdus.append(SubmitPdu((smsc_field + tpdu).hex().upper(), len(tpdu)))
    return pdus


def _encode_time(moment: datetime) -> bytes:
    offset = moment.utcoffset()
    if offset is None:
        raise PduError("timestamp needs a timezone")
    seconds = int(offset.total_seconds())
    quarters, rest = divmod(abs(seconds), 900)
    if rest or quarters > 79 or not 2000 <= moment.year <= 2099:
        raise PduError(f"timestamp not representable in a PDU: {moment.isoformat()}")
    fields = (moment.year % 100, moment.month, moment.day, moment.hour, moment.minute)
    octets = [(v % 10) << 4 | v // 10 for v in (*fields, moment.second, quarters)]
    if seconds < 0:
        octets[-1] |= 0x08
    return bytes(octets)


def encode_deliver(
    sender: str,
    text: str = "",
    *,
    sent_at: datetime,
    reference: int = 0,
    wide_reference: bool = False,
    smsc: str | None = None,
    data: bytes | None = None,
) -> list[str]:
    """SMS-DELIVER PDUs (hex, SMSC field first) as a modem reports them in +CMT/+CMGL.

    ``sender`` is +international, plain digits or an alphanumeric name. A long ``text`` is
    split like ``encode_submit`` does, with an 8-bit or (``wide_reference``) 16-bit
    concatenation reference. ``data`` gives an 8-bit binary message instead of text.
    """
    head_smsc = _smsc_field(smsc)
    address = _address_field(sender)
    _check_range("reference", reference, 0, 0xFFFF if wide_reference else 0xFF)
    payloads: list[str | bytes]
    if data is not None:
        if text or len(data) > 140:
            raise PduError("binary data: no text and at most 140 octets")
        encoding, payloads = "8bit", [bytes(data)]
    else:
        encoding, chunks = _parts(text, _MAX_PARTS, wide_reference)
        payloads = list(chunks)
    stamp = _encode_time(sent_at)
    pdus = []
    for seq, payload in enumerate(payloads, 1):
        multi = len(payloads) > 1
        udh = _concat_ie(reference, len(payloads), seq, wide_reference) if multi else b""
        udl, ud = _user_data(payload, encoding, udh)
        first = 0x04 | (0x40 if udh else 0)  # 0x04: TP-MMS, no more messages waiting
        tpdu = bytes([first]) + address + bytes([0x00, _DCS[encoding]]) + stamp
        pdus.append((head_smsc + tpdu + bytes([udl]) + ud).hex().upper())
    return pdus


def encode_status_report(
    recipient: str,
    reference: int,
    status: int,
    *,
    sent_at: datetime,
    discharged_at: datetime,
    smsc: str | None = None,
) -> str:
    """An SMS-STATUS-REPORT PDU (hex, SMSC field first) as a modem reports it in +CDS."""
    _check_range("reference", reference, 0, 255)
    _check_range("status", status, 0, 255)
    body = bytes([0x06, reference]) + _address_field(recipient)
    body += _encode_time(sent_at) + _encode_time(discharged_at) + bytes([status])
    return (_smsc_field(smsc) + body).hex().upper()


# --- decoding -----------------------------------------------------------------------------

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_NIBBLES = "0123456789*#abc"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, count: int, what: str) -> bytes:
        if self._pos + count > len(self._data):
            raise PduError(f"PDU truncated in {what}")
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk


def _from_hex(pdu_hex: str) -> bytes:
    if not isinstance(pdu_hex, str):
        raise PduError(f"PDU must be a hex string, got {type(pdu_hex).__name__}")
    cleaned = pdu_hex.strip()
    if not _HEX.fullmatch(cleaned):
        raise PduError("PDU is not an even-length hex string")
    return bytes.fromhex(cleaned)


def decode(pdu_hex: str) -> Deliver | StatusReport:
    """Decode an SMS-DELIVER or SMS-STATUS-REPORT (hex with the SMSC field, as from +CMT,
    +CMGL, +CDS). Anything else, malformed or truncated raises PduError."""
    reader = _Reader(_from_hex(pdu_hex))
    reader.take(reader.byte("SMSC length"), "SMSC address")
    first = reader.byte("first octet")
    kind = first & 0x03
    if kind == 0x00:
        return _decode_deliver(reader, first)
    if kind == 0x02:
        return _decode_status_report(reader)
    raise PduError("SMS-SUBMIT PDU, not a received message" if kind == 1 else "reserved TP-MTI")


def _decode_address(reader: _Reader) -> str:
    length = reader.byte("address length")
    if length > 20:
        raise PduError(f"address length {length} exceeds 20 semi-octets")
    toa = reader.byte("type of address")
    raw = reader.take((length + 1) // 2, "address")
    if toa & 0x70 == 0x50:
        return _decode_alphanumeric(raw, length)
    nibbles = [n for octet in raw for n in (octet & 0x0F, octet >> 4)][:length]
    if 0x0F in nibbles:
        raise PduError("filler semi-octet inside an address")
    digits = "".join(_NIBBLES[n] for n in nibbles)
    return "+" + digits if toa & 0x70 == 0x10 else digits


def _decode_alphanumeric(raw: bytes, length: int) -> str:
    codes = _unpack_septets(raw, length * 4 // 7)
    # Many senders count whole octets: 7 full octets then carry a zero 8th septet of padding.
    if codes and len(codes) * 7 == len(raw) * 8 and codes[-1] == 0:
        codes.pop()
    return _gsm7_decode(codes)


def _decode_time(raw: bytes) -> datetime | None:
    """The SMSC timestamp; None when it is not a valid date (the message is still kept)."""
    nibbles = [(octet & 0x0F, octet >> 4) for octet in raw]
    tz_tens, tz_units = nibbles[-1]
    nibbles[-1] = (tz_tens & 0x07, tz_units)
    if any(n > 9 for pair in nibbles for n in pair):
        return None
    yy, mo, dd, hh, mi, ss, quarters = (tens * 10 + units for tens, units in nibbles)
    offset = timedelta(minutes=15 * quarters) * (-1 if tz_tens & 0x08 else 1)
    try:
        return datetime(2000 + yy, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError:
        return None


def _alphabet(dcs: int) -> str:
    """TP-DCS to gsm7/ucs2/8bit (23.038 clause 4); compressed text is kept as 8-bit data."""
    group = dcs >> 4
    if group < 0x8:
        if dcs & 0x20:
            return "8bit"
        return ("gsm7", "8bit", "ucs2", "gsm7")[(dcs >> 2) & 0x03]
    if group == 0xE:
        return "ucs2"
    if group == 0xF:
        return "8bit" if dcs & 0x04 else "gsm7"
    return "gsm7"  # reserved groups are read as GSM-7; 0xC, 0xD are GSM-7 message waiting


def _decode_deliver(reader: _Reader, first: int) -> Deliver:
    sender = _decode_address(reader)
    reader.byte("protocol identifier")
    encoding = _alphabet(reader.byte("data coding scheme"))
    sent_at = _decode_time(reader.take(7, "timestamp"))
    udl = reader.byte("user data length")
    if udl > (160 if encoding == "gsm7" else 140):
        raise PduError(f"user data length {udl} too large for {encoding}")
    ud = reader.take((udl * 7 + 7) // 8 if encoding == "gsm7" else udl, "user data")
    if reader.rest():
        raise PduError("trailing bytes after the user data")
    header, concat = _split_udh(ud) if first & 0x40 else (b"", None)
    text, data_hex = _decode_body(ud, udl, len(header), encoding)
    reference, total, seq = concat or (None, 1, 1)
    binary = encoding == "8bit"
    return Deliver(sender, text, sent_at, reference, total, seq, encoding, binary, data_hex)


def _decode_body(ud: bytes, udl: int, header_len: int, encoding: str) -> tuple[str, str]:
    """(text, data_hex) of the user data after ``header_len`` octets of UDH."""
    if encoding == "gsm7":
        skip = (header_len * 8 + 6) // 7
        if skip > udl:
            raise PduError("user data header longer than the user data")
        return _gsm7_decode(_unpack_septets(ud, udl)[skip:]), ""
    body = ud[header_len:]
    if encoding == "8bit":
        return "", body.hex().upper()
    return body.decode("utf-16-be", errors="replace"), ""


def _split_udh(ud: bytes) -> tuple[bytes, tuple[int, int, int] | None]:
    """The whole UDH (with its length octet) and the concatenation it carries, if any."""
    if not ud or ud[0] + 1 > len(ud):
        raise PduError("user data header longer than the user data")
    header = ud[: ud[0] + 1]
    concat = None
    items = iter(header[1:])
    read = 0
    while read < len(header) - 1:
        try:
            element = InformationElement.decode(items)
        except (StopIteration, ValueError, IndexError) as exc:
            raise PduError("information element overruns the user data header") from exc
        read += len(element)
        if element.id in (0x00, 0x08):
            concat = _concat(element)
    return header, concat


def _concat(element: object) -> tuple[int, int, int] | None:
    """(reference, total, seq) of a concatenation IE; None when 23.040 says to ignore it
    (total 0, seq 0 or seq > total): the part is then read as a message on its own."""
    iei = int(getattr(element, "id", -1))
    if int(getattr(element, "dataLength", -1)) != (3 if iei == 0x00 else 4):
        raise PduError("malformed concatenation information element")
    reference = int(getattr(element, "reference", 0))
    total = int(getattr(element, "parts", 0))
    seq = int(getattr(element, "number", 0))
    if total == 0 or not 1 <= seq <= total:
        return None
    return reference, total, seq


def _decode_status_report(reader: _Reader) -> StatusReport:
    reference = reader.byte("message reference")
    recipient = _decode_address(reader)
    reader.take(7, "service centre timestamp")
    discharged_at = _decode_time(reader.take(7, "discharge time"))
    status = reader.byte("status")
    # TP-PI and optional parameters may follow; nothing in them is needed.
    delivered = status < 0x20
    final = not 0x20 <= status < 0x40
    return StatusReport(reference, recipient, status, delivered, final, discharged_at)


def join(parts: Sequence[Deliver]) -> str:
    """The text of a concatenated message from its parts (any order). Identical duplicates
    (re-deliveries) are tolerated; missing, conflicting, mixed or binary parts raise PduError."""
    if not parts:
        raise PduError("no parts to join")
    first = parts[0]
    if first.concat_reference is None:
        if len(parts) > 1:
            raise PduError("a single message cannot be joined with other parts")
        return _text_of(first)
    key = (first.sender, first.concat_reference, first.concat_total)
    by_seq: dict[int, str] = {}
    for part in parts:
        if (part.sender, part.concat_reference, part.concat_total) != key:
            raise PduError("parts belong to different messages")
        text = _text_of(part)
        if by_seq.setdefault(part.concat_seq, text) != text:
            raise PduError(f"two different parts numbered {part.concat_seq}")
    missing = set(range(1, first.concat_total + 1)) - by_seq.keys()
    if missing:
        raise PduError(f"missing parts {sorted(missing)} of {first.concat_total}")
    return "".join(by_seq[seq] for seq in sorted(by_seq))


def _text_of(part: Deliver) -> str:
    if part.binary:
        raise PduError("binary message parts have no text")
    return part.text
