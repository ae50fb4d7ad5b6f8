"""Golden cases for VN_AQI (Decision 1459/QĐ-TCMT, 2019), computed by hand.

Sub-index: I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo on Table 2, rounded half
up. The worked example is the decision's own section 2.3 ("Tính toán mẫu"), whose inputs were
found with a search of public material: a transcription of the decision's PDF (published by
the Vietnam Environment Administration, vea.mae.gov.vn) in the public repository
qnguyenle075/hcmc-air-quality, file data/processed/qd_1459_vn_aqi.md.
"""

from __future__ import annotations

import pytest

from edge_agent.derive.vn_aqi import (
    CATEGORIES,
    category,
    daily_aqi,
    daily_from_hours,
    hourly_aqi,
    max_8h_mean,
    nowcast,
    round_half_up,
    sub_index,
    sub_index_exact,
)

# (µg/m³, index): every Table 2 breakpoint, a point inside every segment (its middle, so
# the index is the middle of the index range too), and beyond the last breakpoint.
PM2_5 = [
    (0, 0),
    (12.5, 25),
    (25, 50),
    (37.5, 75),
    (50, 100),
    (65, 125),
    (80, 150),
    (115, 175),
    (150, 200),
    (200, 250),
    (250, 300),
    (300, 350),  # 250-350 is its own segment: 100 index points over 100 µg/m³
    (350, 400),
    (425, 450),  # 350-500: 100 index points over 150 µg/m³
    (500, 500),
    (650, 500),
    # off the middle, to check the slopes: 35 -> 50 + 10*50/25; 270 -> 300 + 20*100/100;
    # 400 -> 400 + 50*100/150 = 433.33; 260.5 -> 310.5 rounds up to 311
    (35, 70),
    (270, 320),
    (400, 433),
    (260.5, 311),
]
PM10 = [
    (0, 0),
    (25, 25),
    (50, 50),
    (100, 75),
    (150, 100),
    (200, 125),
    (250, 150),
    (300, 175),
    (350, 200),
    (385, 250),
    (420, 300),
    (460, 350),
    (500, 400),
    (550, 450),
    (600, 500),
    (800, 500),
    (80, 65),  # 50 + 30 * 50/100
    (430, 313),  # 300 + 10 * 100/80 = 312.5 -> 313
]


@pytest.mark.parametrize(("concentration", "index"), PM2_5)
def test_pm2_5_sub_index(concentration: float, index: int) -> None:
    assert sub_index("pm2_5", concentration) == index


@pytest.mark.parametrize(("concentration", "index"), PM10)
def test_pm10_sub_index(concentration: float, index: int) -> None:
    assert sub_index("pm10", concentration) == index


@pytest.mark.parametrize(
    ("table", "concentration", "index"),
    [
        ("o3_1h", 160, 50),
        ("o3_1h", 250, 125),
        ("o3_1h", 1200, 500),
        ("o3_8h", 100, 50),
        ("o3_8h", 400, 300),
        ("o3_8h", 401, None),  # no 8-hour index above 400 µg/m³ (2.2.2.b)
        ("co", 10_000, 50),
        ("co", 37_500, 125),
        ("so2", 125, 50),
        ("so2", 1850, 350),
        ("no2", 200, 100),
        ("no2", 3475, 450),
    ],
)
def test_gas_sub_index(table: str, concentration: float, index: int | None) -> None:
    assert sub_index(table, concentration) == index


def test_pm2_5_segments_above_250_stay_apart() -> None:
    # A merged 250-500 segment would give 300 + 50*200/250 = 340 at 300 µg/m³, not 350.
    assert sub_index_exact("pm2_5", 300) == 350.0
    assert sub_index_exact("pm2_5", 350) == 400.0
    assert sub_index_exact("pm2_5", 350.0 + 150 / 2) == 450.0


def test_rounding_is_half_up_and_robust() -> None:
    assert round_half_up(40.5) == 41
    assert round_half_up(109.49999999999999) == 110  # 109.5 computed in floating point
    assert round_half_up(59.35) == 59


@pytest.mark.parametrize(
    ("aqi", "code", "color", "label"),
    [
        (0, "tot", (0, 228, 0), "Tốt"),
        (50, "tot", (0, 228, 0), "Tốt"),
        (51, "trung_binh", (255, 255, 0), "Trung bình"),
        (100, "trung_binh", (255, 255, 0), "Trung bình"),
        (101, "kem", (255, 126, 0), "Kém"),
        (150, "kem", (255, 126, 0), "Kém"),
        (151, "xau", (255, 0, 0), "Xấu"),
        (201, "rat_xau", (143, 63, 151), "Rất xấu"),
        (300, "rat_xau", (143, 63, 151), "Rất xấu"),
        (301, "nguy_hai", (126, 0, 35), "Nguy hại"),
        (500, "nguy_hai", (126, 0, 35), "Nguy hại"),
    ],
)
def test_categories_of_table_1(
    aqi: int, code: str, color: tuple[int, int, int], label: str
) -> None:
    cat = category(aqi)
    assert (cat.code, cat.color, cat.label_vi) == (code, color, label)
    assert len(CATEGORIES) == 6


# --- NowCast -------------------------------------------------------------------------------


def test_nowcast_rising_series() -> None:
    # Most recent first: the air got worse, 30 for 11 hours and 60 now. w* = 30/60 = 0.5, so
    # w = 1/2 and NowCast = 0.5*60 + 30*(0.5^2 + ... + 0.5^12) = 30 + 30*(0.5 - 0.5^12)
    # = 30 + 14.99267578125 = 44.99267578125. AQI = 50 + (44.99 - 25)*2 = 89.99 -> 90.
    hours = [60.0] + [30.0] * 11
    assert nowcast(hours) == pytest.approx(44.99267578125, abs=1e-12)
    result = hourly_aqi(pm2_5_hours=hours)
    assert (result.aqi, result.dominant, result.sub_indices) == (90, "pm2_5", {"pm2_5": 90})


def test_nowcast_falling_series() -> None:
    # Most recent first: 40 now, after 11 hours of 50. w* = 40/50 = 0.8 > 1/2, so w = 0.8 and
    # NowCast = (40 + 50*(0.8 + ... + 0.8^11)) / (1 + 0.8 + ... + 0.8^11).
    # sum_{k=0..11} 0.8^k = (1 - 0.8^12)/0.2 = 4.6564066... ; the tail is that minus 1.
    # NowCast = 50 - 10/4.6564066... = 47.852403...
    hours = [40.0] + [50.0] * 11
    weights = (1 - 0.8**12) / 0.2
    assert nowcast(hours) == pytest.approx(50 - 10 / weights, rel=1e-12)
    assert nowcast(hours) == pytest.approx(47.8524, abs=1e-4)
    assert hourly_aqi(pm2_5_hours=hours).aqi == 96  # 50 + 22.8524*2 = 95.70 -> 96


def test_nowcast_with_a_missing_hour_gives_it_no_weight() -> None:
    # c4 missing: w* = 40/50 over the hours present; its weight 0.8^3 drops out of both sums.
    hours = [40.0, 50.0, 50.0, None] + [50.0] * 8
    num = 40 + 50 * (0.8 + 0.8**2) + 50 * sum(0.8**k for k in range(4, 12))
    den = 1 + 0.8 + 0.8**2 + sum(0.8**k for k in range(4, 12))
    assert nowcast(hours) == pytest.approx(num / den, rel=1e-12)


def test_nowcast_needs_two_of_the_last_three_hours() -> None:
    full = [30.0] * 12
    assert nowcast(full) == pytest.approx(30.0)
    assert nowcast([None, 30.0, 30.0, *full[3:]]) == pytest.approx(30.0)
    assert nowcast([30.0, None, 30.0, *full[3:]]) == pytest.approx(30.0)
    assert nowcast([None, None, 30.0, *full[3:]]) is None
    assert nowcast([30.0, None, None, *full[3:]]) is None
    assert nowcast([30.0, 30.0]) == pytest.approx(30.0)  # a young station: 2 hours are enough
    assert nowcast([30.0]) is None
    result = hourly_aqi(pm2_5_hours=[None, None, 30.0], o3=100.0)
    assert result.aqi is None
    assert result.sub_indices == {"o3": 31}  # the gas is still shown, the index is not
    assert result.reason is not None and "2 of the last 3" in result.reason


def test_aqi_requires_pm2_5_or_pm10() -> None:
    assert hourly_aqi(o3=300.0, no2=700.0).aqi is None
    assert daily_aqi(o3_1h_max=300.0).aqi is None
    assert hourly_aqi(pm10_hours=[80.0, 80.0], o3=300.0).aqi == 150  # O3 dominates


# --- the decision's worked example (section 2.3) -------------------------------------------

ANNEX_PM2_5 = [26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6]  # 9-20h


def test_annex_nowcast() -> None:
    # w* = 16.5 / 26.9 = 0.61 > 0.5; the annex gives NowCast = 20.3 µg/m³.
    assert round(nowcast(ANNEX_PM2_5[::-1]) or 0, 1) == 20.3


def test_annex_hourly_aqi() -> None:
    result = hourly_aqi(pm2_5_hours=ANNEX_PM2_5[::-1], o3=136.1, no2=118.7)
    # The annex: O3 43, PM2.5 41, NO2 60, so AQI^h = 60. Its own formula gives NO2
    # (100-50)/(200-100)*(118.7-100)+50 = 59.35, which rounds to 59; we publish the formula's
    # value (the annex's other NO2 case, 65.4 -> 65, rounds the same way, not up).
    assert result.sub_indices == {"pm2_5": 41, "o3": 43, "no2": 59}
    assert (result.aqi, result.dominant) == (59, "no2")


def test_annex_daily_aqi() -> None:
    result = daily_aqi(pm2_5=55.7, o3_8h_max=89.3, o3_1h_max=114.6, no2_1h_max=130.8)
    # The annex: O3 8h 45, O3 1h 36, NO2 65, PM2.5 110 -> AQI^d = 110.
    assert result.sub_indices == {"pm2_5": 110, "o3": 45, "no2": 65}
    assert (result.aqi, result.dominant, result.category) == (110, "pm2_5", category(110))
    assert result.fields()["category"] == "kem"


# O3 hourly means of the annex's 8-hour example, 18:00 of one day to 00:00 two days on.
ANNEX_O3 = [15.7, 14.2, 17.7, 18.9, 19.3, 15.7, 19.7, 22.6, 27.1, 29.0, 31.9, 25.3, 34.7, 35.2]
ANNEX_O3 += [41.6, 45.7, 49.2, 55.8, 69.6, 78.3, 91.5, 97.7, 81.2, 71.8, 43.5, 34.3, 21.5]
ANNEX_O3 += [20.5, 19.4, 20.4, 21.3]
ANNEX_O3_8H = [18.0, 19.4, 21.2, 23.0, 23.8, 25.8, 28.2, 30.9, 33.8, 36.6, 39.9, 44.7, 51.3]
ANNEX_O3_8H += [58.4, 66.2, 71.1, 74.4, 73.7, 71.0, 65.0, 57.8, 48.7, 39.1, 31.6]


def test_annex_eight_hour_means() -> None:
    means = [sum(ANNEX_O3[end - 7 : end + 1]) / 8 for end in range(7, len(ANNEX_O3))]
    assert len(means) == 24
    # 23 of the annex's 24 means agree to the printed 0.1; at 12:00 the printed hours give
    # 357.1/8 = 44.64, which the annex prints as 44.7.
    assert [round(m, 1) for i, m in enumerate(means) if i != 11] == [
        v for i, v in enumerate(ANNEX_O3_8H) if i != 11
    ]
    assert round(means[11], 2) == 44.64
    assert round(max_8h_mean(ANNEX_O3) or 0, 1) == 74.4  # "Giá trị ... lớn nhất ... 74,4"


# --- a day ---------------------------------------------------------------------------------


def test_a_days_aqi_from_its_hours() -> None:
    # PM2.5 hour by hour (01:00 .. 24:00): 20 at night, 80 in the morning rush, 40 by day.
    pm2_5: list[float | None] = [20.0] * 6 + [80.0] * 4 + [40.0] * 14
    # 24-hour mean = (6*20 + 4*80 + 14*40) / 24 = (120 + 320 + 560) / 24 = 41.667
    # -> 50 + 16.667*2 = 83.33 -> 83
    no2: list[float | None] = [50.0] * 23 + [250.0]  # the day's highest hour: 250 -> 105
    o3_before = ANNEX_O3[:7]
    o3 = ANNEX_O3[7:]
    result = daily_from_hours({"pm2_5": pm2_5, "no2": no2, "o3": o3}, o3_before=o3_before)
    assert result.inputs["pm2_5"] == pytest.approx(1000 / 24)
    # O3: max 1-h 97.7 -> 97.7*50/160 = 30.5 -> 31; max 8-h 74.39 -> 37.19 -> 37
    assert result.sub_indices == {"pm2_5": 83, "o3": 37, "no2": 105}
    assert (result.aqi, result.dominant) == (105, "no2")
    assert result.fields()["color"] == [255, 126, 0]


def test_a_day_with_too_few_hours_has_no_24_hour_mean() -> None:
    few: list[float | None] = [40.0] * 17 + [None] * 7  # 17 of 24 < 75 %
    enough: list[float | None] = [40.0] * 18 + [None] * 6
    assert daily_from_hours({"pm2_5": few}).aqi is None
    assert daily_from_hours({"pm2_5": enough}).aqi == 80
