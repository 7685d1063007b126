#!/usr/bin/env bash
# Install pokedge as a systemd service on Raspberry Pi OS (Bookworm or Trixie) or Debian.
#
#   sudo scripts/install.sh            # install or upgrade, enable and start pokedge.service
#   sudo scripts/install.sh --no-start # install, but leave the service stopped
#   scripts/install.sh --dry-run       # print every step instead of running it
#   scripts/install.sh --print-config  # print the default /etc/pokedge/config.toml
#
# What it does:
#   1. apt packages: python3-venv, and python3-picamera2 (must match the system libcamera, so it
#      comes from apt, not pip). Hailo packages are left to 'sudo apt install hailo-all'.
#   2. the system user 'pokedge' (no login, home /var/lib/pokedge) in group video.
#   3. a copy of this checkout in $PREFIX/src, and a venv in $PREFIX/venv created with
#      --system-site-packages so the apt-installed picamera2 and hailo_platform are importable.
#   4. /etc/pokedge/config.toml, written only when missing (an existing one is kept).
#   5. the units of systemd/ (pokedge.service, and pokedge-sync.service and .timer when present) in
#      /etc/systemd/system, then daemon-reload, enable and start pokedge.service. The sync timer
#      needs S3 settings and credentials first, so it is installed but not enabled.
set -euo pipefail

PREFIX=/opt/pokedge
CONFIG_DIR=/etc/pokedge
UNIT_DIR=/etc/systemd/system
SERVICE_USER=pokedge
START=1
DRY_RUN=0
APT=1
SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --prefix DIR (default $PREFIX), --no-start, --no-apt, --dry-run, --print-config"
}

default_config() {
    cat <<'EOF'
# pokedge service settings; every key is optional. Flags of 'pokedge serve' override them.
# After editing: sudo systemctl restart pokedge

[serve]
source = "picamera2"          # picamera2[:N], opencv:INDEX, opencv:URL, file:PATH or dir:PATH
http = "127.0.0.1:8765"       # the API has no authentication; keep it on loopback
backend = "auto"              # auto: the Hailo device when usable, else ONNX Runtime on the CPU
# threads = 3                 # ONNX Runtime CPU threads (default: all cores; 1 per call when pipelined)
# recognition = "auto"        # sequential, pipelined, or auto: pipelined on 2 or more cores
# data_dir = "/var/lib/pokedge"  # default: systemd's StateDirectory

[camera]
main_size = [1920, 1080]
fps = 30
af_mode = "continuous"        # continuous, auto, manual (with lens_position in dioptres) or off
# lens_position = 5.0         # 1 / distance in metres: 5.0 focuses at 20 cm

[tracker]
confirm_frames = 3            # consecutive agreeing frames that confirm a card
unknown_frames = 6            # still frames without a confirmation before a card is reported unknown

[scanlog]
save_images = true            # keep JPEGs of unknown and low-confidence cards
min_free_mb = 200             # stop saving JPEGs below this much free space
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-start) START=0; shift ;;
        --no-apt) APT=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --print-config) default_config; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

step() { echo "==> $*"; }

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo scripts/install.sh), or use --dry-run to see the steps" >&2
    exit 1
fi
if [ ! -f "$SOURCE_DIR/pyproject.toml" ] || [ ! -f "$SOURCE_DIR/systemd/pokedge.service" ]; then
    echo "install.sh: $SOURCE_DIR is not a pokedge checkout (pyproject.toml or systemd/pokedge.service missing)" >&2
    exit 1
fi

if [ "$APT" = 1 ]; then
    step "apt packages"
    run apt-get update
    run apt-get install -y python3-venv python3-pip rsync
    # picamera2 must match the system libcamera; a Pi without a camera stack still gets pokedge.
    if ! run apt-get install -y python3-picamera2; then
        echo "install.sh: python3-picamera2 is not available; the picamera2 source will not work" >&2
    fi
fi

step "service user $SERVICE_USER"
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    run useradd --system --user-group --home-dir /var/lib/pokedge --no-create-home \
        --shell /usr/sbin/nologin --comment "pokedge card recognition" "$SERVICE_USER"
fi
run usermod --append --groups video "$SERVICE_USER"

step "code in $PREFIX/src"
run mkdir -p "$PREFIX/src"
run rsync -a --delete --exclude .git --exclude .venv --exclude '__pycache__' --exclude '*.egg-info' \
    "$SOURCE_DIR/" "$PREFIX/src/"

step "venv in $PREFIX/venv (with system site packages for picamera2 and hailo_platform)"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    run python3 -m venv --system-site-packages "$PREFIX/venv"
fi
run "$PREFIX/venv/bin/pip" install --upgrade pip
# Editable: the shipped model and gallery are read from the source tree.
run "$PREFIX/venv/bin/pip" install -e "$PREFIX/src"
# The service cannot write under $PREFIX (ProtectSystem=strict), so compile the bytecode now.
run "$PREFIX/venv/bin/python" -m compileall -q "$PREFIX/src/pokedge"

step "config $CONFIG_DIR/config.toml"
run mkdir -p "$CONFIG_DIR"
if [ -f "$CONFIG_DIR/config.toml" ]; then
    echo "keeping the existing $CONFIG_DIR/config.toml"
elif [ "$DRY_RUN" = 1 ]; then
    echo "+ write the default config (scripts/install.sh --print-config) to $CONFIG_DIR/config.toml"
else
    default_config > "$CONFIG_DIR/config.toml"
    chmod 0644 "$CONFIG_DIR/config.toml"
fi

step "systemd units"
for unit in "$SOURCE_DIR"/systemd/*.service "$SOURCE_DIR"/systemd/*.timer; do
    [ -f "$unit" ] || continue
    name="$(basename "$unit")"
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ install systemd/$name as $UNIT_DIR/$name (paths under $PREFIX)"
    else
        sed "s|/opt/pokedge|$PREFIX|g" "$unit" > "$UNIT_DIR/$name"
        chmod 0644 "$UNIT_DIR/$name"
    fi
done
run systemctl daemon-reload
run systemctl enable pokedge.service
if [ "$START" = 1 ]; then
    run systemctl restart pokedge.service
fi

cat <<EOF

pokedge is installed.
  status:   systemctl status pokedge
  logs:     journalctl -u pokedge -f
  health:   curl http://127.0.0.1:8765/health
  settings: $CONFIG_DIR/config.toml (then: sudo systemctl restart pokedge)
  daily sync: set up /etc/pokedge/sync.toml and credentials (docs/sync.md), then
            sudo systemctl enable --now pokedge-sync.timer
  reload after a manual sync: sudo systemctl reload pokedge
For the Hailo NPU: sudo apt install dkms hailo-all, reboot, then check with 'pokedge doctor'.
EOF
