"""Words and style of the operations-room view: Vietnamese first, English beside it."""

from __future__ import annotations

TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Trung tâm điều hành — các trạm",
        "summary": "{online} trực tuyến · {offline} ngoại tuyến · {unknown} chưa rõ",
        "node": "Trạm",
        "area": "Khu vực",
        "state": "Trạng thái",
        "since": "Từ",
        "version": "Phiên bản",
        "last_event": "Sự kiện cuối",
        "pending": "Chờ gửi",
        "health": "Tình trạng",
        "holes": "Khoảng thiếu",
        "aqi": "AQI",
        "online": "trực tuyến",
        "offline": "ngoại tuyến",
        "unknown": "chưa rõ",
        "ok": "tốt",
        "degraded": "suy giảm",
        "failing": "lỗi",
        "ago": "{age} trước",
        "never": "chưa có",
        "back": "← Tất cả các trạm",
        "switch": "English",
        "no_nodes": "Chưa có trạm nào báo về.",
        "sensors": "Cảm biến (giá trị mới nhất)",
        "sensor": "Cảm biến",
        "quantity": "Đại lượng",
        "value": "Giá trị",
        "quality": "Chất lượng",
        "time": "Thời gian",
        "cameras": "Camera",
        "camera": "Camera",
        "counted": "Đếm được trong giờ cuối",
        "events": "Sự kiện gần đây",
        "kind": "Loại",
        "source": "Nguồn",
        "detail": "Chi tiết",
        "sequences": "Chuỗi sự kiện",
        "epoch": "Epoch",
        "max_seq": "Seq cao nhất",
        "contiguous": "Liên tục đến",
        "open_holes": "Khoảng thiếu đang mở",
        "range": "Seq thiếu",
        "opened": "Báo từ",
        "statuses": "Lịch sử trạng thái",
        "reason": "Lý do",
        "none": "Không có.",
        "refresh": "Trang tự làm mới mỗi 30 giây. Giờ: {zone}.",
        "not_found": "Không có trạm này.",
    },
    "en": {
        "title": "Operations centre — nodes",
        "summary": "{online} online · {offline} offline · {unknown} unknown",
        "node": "Node",
        "area": "Area",
        "state": "State",
        "since": "Since",
        "version": "Version",
        "last_event": "Last event",
        "pending": "Pending",
        "health": "Health",
        "holes": "Holes",
        "aqi": "AQI",
        "online": "online",
        "offline": "offline",
        "unknown": "unknown",
        "ok": "ok",
        "degraded": "degraded",
        "failing": "failing",
        "ago": "{age} ago",
        "never": "never",
        "back": "← All nodes",
        "switch": "Tiếng Việt",
        "no_nodes": "No node has reported yet.",
        "sensors": "Sensors (newest values)",
        "sensor": "Sensor",
        "quantity": "Quantity",
        "value": "Value",
        "quality": "Quality",
        "time": "Time",
        "cameras": "Cameras",
        "camera": "Camera",
        "counted": "Counted in the last hour",
        "events": "Recent events",
        "kind": "Kind",
        "source": "Source",
        "detail": "Detail",
        "sequences": "Event sequences",
        "epoch": "Epoch",
        "max_seq": "Highest seq",
        "contiguous": "Contiguous to",
        "open_holes": "Open holes",
        "range": "Missing seqs",
        "opened": "Reported since",
        "statuses": "Status history",
        "reason": "Reason",
        "none": "None.",
        "refresh": "The page refreshes every 30 s. Times: {zone}.",
        "not_found": "No such node.",
    },
}

CSS = """
:root { color-scheme: light; --ok: #1b7f3b; --bad: #b3261e; --mute: #5f6368; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: #1f1f1f; background: #f6f7f9; }
header { background: #0b3d6b; color: #fff; padding: 12px 20px; display: flex;
  flex-wrap: wrap; gap: 12px; align-items: baseline; justify-content: space-between; }
header h1 { font-size: 20px; margin: 0; }
header a { color: #fff; }
main { padding: 12px 20px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; margin: 14px 0;
  padding: 10px 14px; overflow-x: auto; }
h2 { font-size: 17px; margin: 4px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eceff3;
  white-space: nowrap; }
th { color: var(--mute); font-weight: 600; font-size: 13px; }
td.detail { white-space: normal; font-family: ui-monospace, monospace; font-size: 12px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; }
.state-online { background: #e3f4e8; color: var(--ok); }
.state-offline { background: #fbe4e2; color: var(--bad); }
.state-unknown { background: #eceff3; color: var(--mute); }
.verdict-failing, .holes-open { color: var(--bad); font-weight: 600; }
.verdict-degraded { color: #8a5a00; font-weight: 600; }
.mute, footer { color: var(--mute); font-size: 13px; }
footer { padding: 0 20px 20px; }
"""

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#0b3d6b"/>'
    '<circle cx="8" cy="8" r="3.5" fill="#fff"/></svg>'
)
