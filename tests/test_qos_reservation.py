"""Traffic classes and marks, stream specs, admission control and its messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telepresence.exceptions import ConfigError
from telepresence.qos import (
    AdmissionControl,
    Dscp,
    Grant,
    Refusal,
    RefusalReason,
    StreamSpec,
    TrafficClass,
    dscp_of_tos,
    format_bps,
    tos_of,
)

M = 1_000_000


def spec(
    stream: int,
    cls: TrafficClass | str,
    rate: int,
    burst: int = 3000,
    size: int = 1200,
    name: str = "",
) -> StreamSpec:
    return StreamSpec(
        stream=stream,
        traffic_class=TrafficClass.parse(cls),
        rate_bps=rate,
        burst_bytes=burst,
        max_packet_bytes=size,
        name=name,
    )


def granted(result: Grant | Refusal) -> Grant:
    assert isinstance(result, Grant), str(result)
    return result


def refused(result: Grant | Refusal) -> Refusal:
    assert isinstance(result, Refusal), f"expected a refusal, got {result}"
    return result


# -- classes and marks ------------------------------------------------------------------------


def test_classes_are_in_strict_priority_order() -> None:
    assert [c.name for c in sorted(TrafficClass)] == [
        "CONTROL",
        "HAPTICS",
        "TELEMETRY",
        "VIDEO",
        "BULK",
    ]
    assert [int(c) for c in TrafficClass] == [0, 1, 2, 3, 4]


def test_dscp_and_tos_per_rfc() -> None:
    assert TrafficClass.CONTROL.dscp == TrafficClass.HAPTICS.dscp == Dscp.EF
    assert [int(d) for d in (Dscp.EF, Dscp.CS4, Dscp.AF41, Dscp.CS1)] == [46, 32, 34, 8]
    assert TrafficClass.TELEMETRY.dscp == Dscp.CS4
    assert TrafficClass.VIDEO.dscp == Dscp.AF41
    assert TrafficClass.BULK.dscp == Dscp.CS1
    assert TrafficClass.CONTROL.tos == 0xB8
    assert TrafficClass.VIDEO.tos == 0x88
    assert [c.tos for c in TrafficClass] == [c.dscp << 2 for c in TrafficClass]
    # no class ranks below a lower-priority one by IP precedence (the class-selector bits)
    precedence = [c.dscp >> 3 for c in TrafficClass]
    assert precedence == sorted(precedence, reverse=True)


def test_tos_helpers() -> None:
    assert tos_of(46) == 184 and dscp_of_tos(184) == 46 and dscp_of_tos(185) == 46
    with pytest.raises(ConfigError, match=r"0\.\.63"):
        tos_of(64)
    with pytest.raises(ConfigError, match=r"0\.\.255"):
        dscp_of_tos(256)


def test_parse_class() -> None:
    assert TrafficClass.parse("Video") is TrafficClass.VIDEO
    assert TrafficClass.parse(0) is TrafficClass.CONTROL
    for bad in ("voice", 5, True, None):
        with pytest.raises(ConfigError, match="traffic_class must be one of"):
            TrafficClass.parse(bad)


def test_marks_can_be_overridden() -> None:
    ac = AdmissionControl(100 * M, marks={TrafficClass.BULK: Dscp.LE})
    g = granted(ac.request(spec(5, "bulk", M)))
    assert (g.dscp, g.tos) == (1, 4)
    with pytest.raises(ConfigError, match=r"marks\[video\] must be a DSCP within 0..63"):
        AdmissionControl(100 * M, marks={TrafficClass.VIDEO: 99})


def test_format_bps() -> None:
    assert format_bps(12_400_000) == "12.4 Mbit/s"
    assert format_bps(100 * M) == "100 Mbit/s"
    assert format_bps(600_000) == "600 kbit/s"
    assert format_bps(999_960) == "1 Mbit/s"
    assert format_bps(64) == "64 bit/s"
    assert format_bps(1_500_000_000) == "1.5 Gbit/s"


# -- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"stream": -1}, r"stream must be within 0..65535"),
        ({"stream": 70000}, r"stream must be within 0..65535"),
        ({"rate_bps": 0}, r"rate_bps must be within 1..\d+ bit/s, got 0"),
        ({"rate_bps": -5}, r"rate_bps must be within"),
        ({"rate_bps": 1.5}, r"rate_bps must be a whole number of bit/s"),
        ({"rate_bps": "1M"}, r"rate_bps must be a whole number"),
        ({"max_packet_bytes": 0}, r"max_packet_bytes must be within 1..65535 bytes"),
        ({"max_packet_bytes": 70000}, r"max_packet_bytes must be within 1..65535 bytes"),
        ({"burst_bytes": 1000}, r"burst_bytes \(1000\) must be >= max_packet_bytes \(1200\)"),
        ({"burst_bytes": 0}, r"burst_bytes must be within"),
        ({"traffic_class": "voice"}, r"traffic_class must be one of"),
        ({"name": "x" * 65}, r"name must be a string of at most 64"),
    ],
)
def test_spec_validation_names_the_field(change: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "stream": 3,
        "traffic_class": TrafficClass.VIDEO,
        "rate_bps": 8 * M,
        "burst_bytes": 30_000,
        "max_packet_bytes": 1200,
    }
    fields.update(change)
    with pytest.raises(ConfigError, match=match):
        StreamSpec(**fields)  # type: ignore[arg-type]


def test_spec_accepts_whole_floats_and_labels() -> None:
    s = StreamSpec(
        stream=3,
        traffic_class=TrafficClass.VIDEO,
        rate_bps=8e6,  # type: ignore[arg-type]
        burst_bytes=30_000,
        max_packet_bytes=1200,
        name="front camera",
    )
    assert s.rate_bps == 8_000_000 and isinstance(s.rate_bps, int)
    assert s.label == "video stream 3 (front camera)"
    assert spec(1, "control", M).label == "control stream 1"


# -- admission --------------------------------------------------------------------------------


def full_link() -> AdmissionControl:
    ac = AdmissionControl(100 * M, headroom=0.1)
    granted(ac.request(spec(1, "control", M)))
    granted(ac.request(spec(19, "haptics", 600_000)))
    granted(ac.request(spec(16, "telemetry", M)))
    granted(ac.request(spec(2, "video", 60 * M, 60_000, name="front camera")))
    granted(ac.request(spec(5, "bulk", 15 * M)))
    return ac


def test_over_capacity_is_refused_with_a_readable_reason() -> None:
    ac = full_link()
    assert ac.reserved_bps == 77_600_000
    assert ac.free_bps == 12_400_000
    r = refused(ac.request(spec(3, "video", 80 * M, 100_000)))
    assert r.reason is RefusalReason.OVER_CAPACITY
    assert r.stream == 3 and not r.ok
    assert str(r) == (
        "video stream 3 asks 80 Mbit/s but only 12.4 Mbit/s of the 100 Mbit/s link are free "
        "after 10 % headroom; reserved: control 1 Mbit/s (stream 1), haptics 600 kbit/s "
        "(stream 19), telemetry 1 Mbit/s (stream 16), video 60 Mbit/s (stream 2, front camera), "
        "bulk 15 Mbit/s (stream 5)"
    )
    assert ac.reserved_bps == 77_600_000  # a refusal changes nothing
    assert len(ac) == 5


def test_exactly_the_free_rate_fits_then_nothing() -> None:
    ac = full_link()
    g = granted(ac.request(spec(3, "video", 12_400_000)))
    assert g.ok and ac.free_bps == 0
    r = refused(ac.request(spec(4, "bulk", 1)))
    assert "only 0 bit/s" in r.message


def test_release_frees() -> None:
    ac = full_link()
    assert 5 in ac
    released = ac.release(5)
    assert released is not None and released.rate_bps == 15 * M
    assert 5 not in ac
    assert ac.free_bps == 27_400_000
    assert ac.release(5) is None  # idempotent
    granted(ac.request(spec(3, "video", 27_400_000)))


def test_headroom() -> None:
    ac = AdmissionControl(10 * M, headroom=0.25)
    assert ac.admissible_bps == 7_500_000
    refused(ac.request(spec(1, "video", 7_500_001)))
    granted(ac.request(spec(1, "video", 7_500_000)))
    assert AdmissionControl(10 * M, headroom=0).admissible_bps == 10 * M
    for bad in (-0.1, 1, 1.5, True):
        with pytest.raises(ConfigError, match=r"headroom must be a fraction within 0\.\.<1"):
            AdmissionControl(10 * M, headroom=bad)
    with pytest.raises(ConfigError, match="capacity_bps must be within 1"):
        AdmissionControl(0)


def test_duplicate_stream_is_refused() -> None:
    ac = full_link()
    r = refused(ac.request(spec(2, "bulk", M)))
    assert r.reason is RefusalReason.DUPLICATE
    assert "stream 2 is already reserved (video stream 2 (front camera), 60 Mbit/s)" in r.message


def test_change_keeps_the_old_grant_when_refused() -> None:
    ac = full_link()
    g = granted(ac.change(spec(2, "video", 72 * M)))  # 60 + 12.4 free
    assert g.rate_bps == 72 * M and ac.free_bps == 400_000
    r = refused(ac.change(spec(2, "video", 73 * M)))
    assert r.reason is RefusalReason.OVER_CAPACITY
    assert "only 72.4 Mbit/s" in r.message
    assert ac.grant(2) is g
    granted(ac.change(spec(2, "video", 10 * M)))
    assert ac.free_bps == 62_400_000
    u = refused(ac.change(spec(99, "video", M)))
    assert u.reason is RefusalReason.UNKNOWN_STREAM


def test_class_share() -> None:
    ac = AdmissionControl(100 * M, class_shares={TrafficClass.VIDEO: 0.5})
    granted(ac.request(spec(2, "video", 30 * M)))
    r = refused(ac.request(spec(3, "video", 25 * M)))
    assert r.reason is RefusalReason.CLASS_SHARE
    assert r.message == (
        "video stream 3 asks 25 Mbit/s but video streams may hold at most 50 % of the "
        "100 Mbit/s link (50 Mbit/s); 30 Mbit/s of it is reserved: video 30 Mbit/s (stream 2)"
    )
    granted(ac.request(spec(3, "video", 20 * M)))
    granted(ac.request(spec(4, "bulk", 40 * M)))  # other classes are not capped
    with pytest.raises(ConfigError, match=r"class_shares\[video\] must be a fraction"):
        AdmissionControl(100 * M, class_shares={TrafficClass.VIDEO: 0})


def test_peer_fields_give_refusals_not_exceptions() -> None:
    ac = AdmissionControl(100 * M)
    good = {
        "stream": 3,
        "traffic_class": "video",
        "rate_bps": 8_000_000,
        "burst_bytes": 30_000,
        "max_packet_bytes": 1200,
    }
    assert granted(ac.request_fields(good)).traffic_class is TrafficClass.VIDEO
    cases = [
        ({**good, "stream": 4, "rate_bps": 0}, "stream 4: rate_bps must be within"),
        ({**good, "stream": 4, "burst_bytes": 100}, "stream 4: burst_bytes (100) must be >="),
        ({**good, "stream": 4, "colour": "red"}, "stream 4: unknown field(s) colour"),
        ({k: v for k, v in good.items() if k != "rate_bps"}, "missing field(s): rate_bps"),
        ({**good, "stream": "x"}, "request: stream must be a whole number"),
    ]
    for fields, text in cases:
        r = refused(ac.request_fields(fields))
        assert r.reason is RefusalReason.INVALID
        assert text in r.message, r.message
    assert refused(ac.request_fields(good)).reason is RefusalReason.DUPLICATE
    assert len(ac) == 1


def test_listing_is_bounded_and_sorted() -> None:
    ac = AdmissionControl(100 * M)
    for i in range(20):
        granted(ac.request(spec(100 - i, "bulk" if i % 2 else "video", 4 * M)))
    assert [g.stream for g in ac.grants][:3] == [82, 84, 86]  # video first, then by id
    r = refused(ac.request(spec(1, "control", 20 * M)))
    assert r.message.endswith("and 8 more")
    assert "reserved: video 4 Mbit/s (stream 82)" in ac.describe()
    assert ac.reserved_by_class()[TrafficClass.BULK] == 40 * M


@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),
            st.sampled_from(list(TrafficClass)),
            st.integers(1, 40 * M),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_reserved_never_exceeds_admissible(ops: list[tuple[int, TrafficClass, int, bool]]) -> None:
    ac = AdmissionControl(100 * M, headroom=0.1)
    model: dict[int, int] = {}
    for stream, cls, rate, release in ops:
        if release:
            ac.release(stream)
            model.pop(stream, None)
            continue
        result = ac.request(spec(stream, cls, rate))
        fits = stream not in model and sum(model.values()) + rate <= 90 * M
        assert result.ok is fits
        if fits:
            model[stream] = rate
        assert ac.reserved_bps == sum(model.values()) <= ac.admissible_bps
        assert ac.free_bps == 90 * M - ac.reserved_bps
