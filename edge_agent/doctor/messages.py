"""What `edge-agent doctor` says for each finding code, in English and Vietnamese.

Each code maps to a message and a fix (empty for a line that needs none); `{name}` fields
are filled from the finding's parameters. docs/install.md lists every line and its meaning.
"""

from __future__ import annotations

Text = tuple[str, str]  # (message, fix)

EN: dict[str, Text] = {
    "config_ok": ("{path} is valid", ""),
    "config_default": (
        "no configuration file: the embedded default (a demo) would run",
        "install one (scripts/install writes /etc/edge-agent/edge-agent.toml) or pass --config",
    ),
    "config_invalid": (
        "{path} is not valid: {problems}",
        "fix each key named above in {path}, then run edge-agent doctor again",
    ),
    "node_ok": ("node id {node} in district {district}", ""),
    "node_generic": (
        "node id {node} is generic: another node may use it too, and the province cannot tell"
        " them apart",
        "set [node] id to a name unique in the province, e.g. {example}; the node certificate's"
        " CN must be the same",
    ),
    "district_default": (
        "district is still the default ({district})",
        "set [node] district to this district's code",
    ),
    "state_ok": ("state directory {path} is writable", ""),
    "state_unwritable": (
        "state directory {path} is not writable: {error}",
        "install -d -m 0750 -o edge-agent -g edge-agent {path} (systemd's StateDirectory="
        " does it at start)",
    ),
    "state_not_for_service": (
        "state directory {path} is not writable for {user} (owner {owner}, mode {mode})",
        "chown {user}:{user} {path} && chmod 0750 {path}",
    ),
    "disk_ok": ("{free} free for the outbox (its cap: {cap})", ""),
    "disk_low": (
        "only {free} free in {path}, less than the outbox may use ({cap})",
        "free space, or set [outbox] max_bytes below {free}; when the disk fills, the oldest"
        " low-priority rows are dropped (and reported as gaps)",
    ),
    "disk_full": (
        "only {free} free in {path}: the outbox cannot keep data",
        "free space on that file system now (journalctl --vacuum-size=100M, apt-get clean)",
    ),
    "model_not_needed": ("no camera configured: the detection model is not used", ""),
    "model_ok": ("model {file}: present, checksum matches, loads ({classes} classes)", ""),
    "model_custom": ("model {file} loads (your own model: no checksum to compare)", ""),
    "model_missing": (
        "model {file} is missing",
        "install the built model: scripts/install --upgrade from a tree that has models/, or"
        " an offline bundle (scripts/build-model builds it where npm is available)",
    ),
    "model_altered": (
        "model {file} does not match its checksum in MANIFEST.json (damaged or replaced)",
        "reinstall it: scripts/install --upgrade from a tree with a good models/, or a bundle",
    ),
    "model_unloadable": (
        "model {file} does not load: {error}",
        "reinstall the model (scripts/install --upgrade); for your own model check"
        " [detector] decoder and classes",
    ),
    "camera_ok": ("camera {name}: a {width}x{height} frame within {seconds} s", ""),
    "camera_failed": (
        "camera {name} does not open: {error}",
        "check {source}: power, cable or network, the RTSP URL with user and password, or that"
        " the device exists and edge-agent is in the video group (try: ffprobe '{source}')",
    ),
    "camera_no_frame": (
        "camera {name} gave no frame within {seconds} s",
        "check {source} plays (ffprobe '{source}'); raise [[cameras]] open_timeout_s on a slow"
        " link",
    ),
    "sensor_ok": ("sensor {name} ({kind}) answered with {count} values", ""),
    "sensor_simulated": (
        "sensor {name} answered with {count} values (simulated: not a measurement)",
        "",
    ),
    "sensor_failed": (
        "sensor {name} ({kind}) does not answer: {error}",
        "check its wiring, power and the device or address in the config; serial ports need"
        " the dialout group; Modbus: unit id, baud rate, parity",
    ),
    "clock_ok": ("clock {now} UTC, synchronised by NTP", ""),
    "clock_unknown": ("clock {now} UTC (the NTP state cannot be read here)", ""),
    "clock_unsynchronised": (
        "clock {now} UTC is not synchronised by NTP",
        "apt-get install systemd-timesyncd (or chrony), then timedatectl set-ntp true; TLS and"
        " event times need a right clock",
    ),
    "clock_behind": (
        "clock says {now} UTC, before {reference} was written ({then} UTC)",
        "set the clock: timedatectl set-ntp true (the NTP servers must be reachable), or"
        " date -s 'YYYY-MM-DD HH:MM'; a board without a battery loses it at power-off",
    ),
    "clock_outside_certificate": (
        "clock says {now} UTC, outside the broker certificate's validity ({start} to {end})",
        "set the clock (timedatectl set-ntp true); if it is right, the broker certificate has"
        " expired: tell the province",
    ),
    "broker_disabled": (
        "[mqtt] enabled = false: nothing is sent to the province",
        "set [mqtt] enabled = true with the province broker's host and port",
    ),
    "broker_ok": ("broker {broker} reachable", ""),
    "broker_unreachable": (
        "cannot reach the broker {broker}: {error}",
        "check [mqtt] host and port, the network and the firewall: nc -vz {host} {port}",
    ),
    "tls_ok": ("TLS with {broker}: certificate trusted, valid until {until}", ""),
    "tls_local": ("TLS off (the broker is on this machine)", ""),
    "tls_disabled": (
        "TLS is off: data to {broker} travels unencrypted and unauthenticated",
        "set [mqtt.tls] enabled = true and ca_file (docs/install.md)",
    ),
    "tls_files": (
        "cannot load the TLS files: {error}",
        "check [mqtt.tls] ca_file, cert_file and key_file (secrets go in"
        " /etc/edge-agent/credentials/)",
    ),
    "tls_untrusted": (
        "the broker's certificate is not trusted: {error}",
        "ca_file must be the CA that signed the broker certificate, the certificate must name"
        " {host}, and the clock must be right",
    ),
    "tls_failed": (
        "TLS with {broker} failed: {error}",
        "is {port} the broker's TLS port? check [mqtt] port and [mqtt.tls]",
    ),
    "auth_ok": ("the broker accepted this node as client {client}", ""),
    "auth_refused": (
        "the broker refused the connection: {error}",
        "check [mqtt] username and the credential mqtt.password, or the node certificate"
        " (CN = {node}), and the broker's ACL",
    ),
    "certificate_refused": (
        "the broker refused this node's certificate: {error}",
        "install a certificate from the province CA, valid now, with CN = {node} (credentials"
        " node.crt and node.key)",
    ),
    "session_failed": (
        "the session with the broker failed: {error}",
        "look at the broker's log for client {client}",
    ),
    "commands_ok": ("the broker granted the command subscription {filter}", ""),
    "commands_refused": (
        "the broker refused the command subscription {filter}: the node would not hear commands",
        "the broker's ACL must let this node read {filter} (docs/operations.md)",
    ),
    "commands_unconfirmed": (
        "subscribed to {filter}, but the broker's answer (SUBACK) cannot be read yet",
        "check the broker's ACL lets this node read {filter} (docs/operations.md)",
    ),
    "web_ok": ("status page port {host}:{port} is free", ""),
    "web_ours": ("status page {host}:{port} is served by this node's agent", ""),
    "web_taken": (
        "port {host}:{port} is taken by another program",
        "find it with ss -ltnp 'sport = :{port}'; stop it or set [web] port",
    ),
    "web_disabled": ("status page disabled ([web] enabled = false)", ""),
}

VI: dict[str, Text] = {
    "config_ok": ("{path} hợp lệ", ""),
    "config_default": (
        "không có tệp cấu hình: sẽ chạy cấu hình mặc định (bản thử)",
        "cài tệp cấu hình (scripts/install tạo /etc/edge-agent/edge-agent.toml) hoặc dùng --config",
    ),
    "config_invalid": (
        "{path} không hợp lệ: {problems}",
        "sửa từng khóa nêu trên trong {path}, rồi chạy lại edge-agent doctor",
    ),
    "node_ok": ("mã nút {node}, quận/huyện {district}", ""),
    "node_generic": (
        "mã nút {node} quá chung: nút khác có thể trùng, tỉnh không phân biệt được",
        "đặt [node] id là tên duy nhất trong tỉnh, ví dụ {example}; CN của chứng thư nút phải"
        " giống hệt",
    ),
    "district_default": (
        "quận/huyện vẫn là giá trị mặc định ({district})",
        "đặt [node] district là mã quận/huyện này",
    ),
    "state_ok": ("thư mục dữ liệu {path} ghi được", ""),
    "state_not_for_service": (
        "{user} không ghi được thư mục dữ liệu {path} (chủ sở hữu {owner}, quyền {mode})",
        "chown {user}:{user} {path} && chmod 0750 {path}",
    ),
    "state_unwritable": (
        "không ghi được thư mục dữ liệu {path}: {error}",
        "install -d -m 0750 -o edge-agent -g edge-agent {path} (StateDirectory= của systemd"
        " làm việc này khi khởi động)",
    ),
    "disk_ok": ("còn trống {free} cho hàng đợi (giới hạn: {cap})", ""),
    "disk_low": (
        "chỉ còn {free} trống ở {path}, ít hơn mức hàng đợi có thể dùng ({cap})",
        "giải phóng dung lượng, hoặc đặt [outbox] max_bytes nhỏ hơn {free}; khi đầy đĩa, các"
        " bản ghi cũ ưu tiên thấp bị bỏ (và được báo là khoảng trống)",
    ),
    "disk_full": (
        "chỉ còn {free} trống ở {path}: hàng đợi không giữ được dữ liệu",
        "giải phóng dung lượng ngay (journalctl --vacuum-size=100M, apt-get clean)",
    ),
    "model_not_needed": ("không cấu hình camera: không dùng mô hình nhận dạng", ""),
    "model_ok": ("mô hình {file}: có, đúng mã kiểm tra, nạp được ({classes} lớp)", ""),
    "model_custom": ("mô hình {file} nạp được (mô hình riêng: không có mã để so)", ""),
    "model_missing": (
        "thiếu mô hình {file}",
        "cài mô hình đã dựng: scripts/install --upgrade từ thư mục có models/, hoặc gói ngoại"
        " tuyến (scripts/build-model dựng mô hình ở máy có npm)",
    ),
    "model_altered": (
        "mô hình {file} không khớp mã kiểm tra trong MANIFEST.json (hỏng hoặc bị thay)",
        "cài lại: scripts/install --upgrade từ thư mục có models/ tốt, hoặc gói ngoại tuyến",
    ),
    "model_unloadable": (
        "không nạp được mô hình {file}: {error}",
        "cài lại mô hình (scripts/install --upgrade); với mô hình riêng, kiểm tra [detector]"
        " decoder và classes",
    ),
    "camera_ok": ("camera {name}: có khung hình {width}x{height} trong {seconds} giây", ""),
    "camera_failed": (
        "không mở được camera {name}: {error}",
        "kiểm tra {source}: nguồn điện, cáp hoặc mạng, địa chỉ RTSP kèm tài khoản và mật khẩu,"
        " hoặc thiết bị có tồn tại và edge-agent thuộc nhóm video (thử: ffprobe '{source}')",
    ),
    "camera_no_frame": (
        "camera {name} không cho khung hình trong {seconds} giây",
        "kiểm tra {source} phát được (ffprobe '{source}'); tăng open_timeout_s của camera khi"
        " mạng chậm",
    ),
    "sensor_ok": ("cảm biến {name} ({kind}) trả lời {count} giá trị", ""),
    "sensor_simulated": ("cảm biến {name} trả lời {count} giá trị (mô phỏng: không phải đo)", ""),
    "sensor_failed": (
        "cảm biến {name} ({kind}) không trả lời: {error}",
        "kiểm tra dây nối, nguồn điện và thiết bị hoặc địa chỉ trong cấu hình; cổng nối tiếp"
        " cần nhóm dialout; Modbus: mã thiết bị, tốc độ baud, parity",
    ),
    "clock_ok": ("đồng hồ {now} UTC, đã đồng bộ NTP", ""),
    "clock_unknown": ("đồng hồ {now} UTC (không đọc được trạng thái NTP ở đây)", ""),
    "clock_unsynchronised": (
        "đồng hồ {now} UTC chưa được đồng bộ NTP",
        "apt-get install systemd-timesyncd (hoặc chrony), rồi timedatectl set-ntp true; TLS và"
        " thời gian sự kiện cần đồng hồ đúng",
    ),
    "clock_behind": (
        "đồng hồ chỉ {now} UTC, trước lúc {reference} được ghi ({then} UTC)",
        "chỉnh đồng hồ: timedatectl set-ntp true (cần tới được máy chủ NTP), hoặc date -s"
        " 'YYYY-MM-DD HH:MM'; bo mạch không có pin sẽ mất giờ khi tắt điện",
    ),
    "clock_outside_certificate": (
        "đồng hồ chỉ {now} UTC, ngoài thời hạn chứng thư của máy chủ MQTT ({start} đến {end})",
        "chỉnh đồng hồ (timedatectl set-ntp true); nếu đồng hồ đúng thì chứng thư máy chủ đã"
        " hết hạn: báo cho tỉnh",
    ),
    "broker_disabled": (
        "[mqtt] enabled = false: không gửi gì lên tỉnh",
        "đặt [mqtt] enabled = true cùng host và port của máy chủ MQTT tỉnh",
    ),
    "broker_ok": ("tới được máy chủ MQTT {broker}", ""),
    "broker_unreachable": (
        "không tới được máy chủ MQTT {broker}: {error}",
        "kiểm tra [mqtt] host và port, mạng và tường lửa: nc -vz {host} {port}",
    ),
    "tls_ok": ("TLS với {broker}: chứng thư tin cậy, còn hạn đến {until}", ""),
    "tls_local": ("không dùng TLS (máy chủ MQTT ở ngay máy này)", ""),
    "tls_disabled": (
        "TLS đang tắt: dữ liệu tới {broker} đi không mã hóa, không xác thực",
        "đặt [mqtt.tls] enabled = true và ca_file (docs/install.md)",
    ),
    "tls_files": (
        "không nạp được tệp TLS: {error}",
        "kiểm tra [mqtt.tls] ca_file, cert_file và key_file (khóa bí mật đặt trong"
        " /etc/edge-agent/credentials/)",
    ),
    "tls_untrusted": (
        "chứng thư của máy chủ MQTT không được tin cậy: {error}",
        "ca_file phải là CA đã ký chứng thư máy chủ, chứng thư phải mang tên {host}, và đồng hồ"
        " phải đúng",
    ),
    "tls_failed": (
        "TLS với {broker} thất bại: {error}",
        "{port} có phải cổng TLS của máy chủ MQTT? kiểm tra [mqtt] port và [mqtt.tls]",
    ),
    "auth_ok": ("máy chủ MQTT chấp nhận nút này với client {client}", ""),
    "auth_refused": (
        "máy chủ MQTT từ chối kết nối: {error}",
        "kiểm tra [mqtt] username và khóa mqtt.password, hoặc chứng thư nút (CN = {node}), và"
        " ACL của máy chủ",
    ),
    "certificate_refused": (
        "máy chủ MQTT từ chối chứng thư của nút: {error}",
        "cài chứng thư do CA tỉnh cấp, còn hạn, có CN = {node} (node.crt và node.key)",
    ),
    "session_failed": (
        "phiên làm việc với máy chủ MQTT thất bại: {error}",
        "xem nhật ký của máy chủ MQTT cho client {client}",
    ),
    "commands_ok": ("máy chủ MQTT cho phép đăng ký nhận lệnh {filter}", ""),
    "commands_refused": (
        "máy chủ MQTT từ chối đăng ký nhận lệnh {filter}: nút sẽ không nghe được lệnh",
        "ACL của máy chủ phải cho nút này đọc {filter} (docs/operations.md)",
    ),
    "commands_unconfirmed": (
        "đã đăng ký {filter}, nhưng chưa đọc được trả lời (SUBACK) của máy chủ",
        "kiểm tra ACL của máy chủ cho nút này đọc {filter} (docs/operations.md)",
    ),
    "web_ok": ("cổng trang trạng thái {host}:{port} còn trống", ""),
    "web_ours": ("trang trạng thái {host}:{port} do chính nút này phục vụ", ""),
    "web_taken": (
        "cổng {host}:{port} đang bị chương trình khác dùng",
        "tìm nó bằng ss -ltnp 'sport = :{port}'; dừng nó hoặc đặt [web] port",
    ),
    "web_disabled": ("trang trạng thái tắt ([web] enabled = false)", ""),
}

CATALOGUES = {"en": EN, "vi": VI}
WORDS = {
    "en": {"fix": "fix", "summary": "{fail} FAIL, {warn} WARN, {ok} OK"},
    "vi": {"fix": "sửa", "summary": "{fail} FAIL (lỗi), {warn} WARN (cảnh báo), {ok} OK"},
}
