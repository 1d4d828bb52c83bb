#!/usr/bin/env bash
# Builds the release archive of the wharf host, in dist/:
#
#   wharf-<version>-<target>.tar.gz   the binary without its debug info, an example
#                                      config, the systemd unit, the Kubernetes
#                                      manifests, the Grafana dashboard, INSTALL.md
#   wharf-<version>-<target>.debug    the binary's debug info, for symbolized backtraces
#   wharf-<version>-<target>.sha256   the checksums of both (`sha256sum -c`)
#
#   scripts/release.sh [--binary PATH] [--target TRIPLE] [--out DIR]
#
# Without --binary it builds the binary (`cargo build --locked --profile dist`,
# for --target if given). With --binary it packs that binary instead (the
# tests pack target/debug/wharf). Needs objcopy (binutils), tar, gzip and
# sha256sum; set OBJCOPY to use another objcopy (a cross one, say).
set -euo pipefail

usage() {
    echo "usage: $0 [--binary PATH] [--target TRIPLE] [--out DIR]" >&2
    exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary=""
target=""
out="$root/dist"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --binary) [[ $# -ge 2 ]] || usage; binary="$2"; shift 2 ;;
        --target) [[ $# -ge 2 ]] || usage; target="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || usage; out="$2"; shift 2 ;;
        *) usage ;;
    esac
done

objcopy="${OBJCOPY:-objcopy}"
for tool in "$objcopy" tar gzip sha256sum cargo rustc; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found" >&2; exit 1; }
done

host="$(rustc -vV | sed -n 's/^host: //p')"
version="$(cd "$root" && cargo pkgid --locked -p wharf)"
version="${version##*[#@]}"
name="wharf-$version-${target:-$host}"

if [[ -z "$binary" ]]; then
    echo "==> building wharf $version for ${target:-$host} (cargo build --locked --profile dist)"
    build=(build --locked --profile dist -p wharf --bin wharf --message-format=json-render-diagnostics)
    [[ -z "$target" ]] || build+=(--target "$target")
    # Cargo names the binary it built, wherever CARGO_TARGET_DIR puts it.
    binary="$(cd "$root" && cargo "${build[@]}" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
    [[ -n "$binary" ]] || { echo "error: cargo did not name the wharf binary it built" >&2; exit 1; }
fi
[[ -f "$binary" ]] || { echo "error: no binary at $binary" >&2; exit 1; }

# A binary for this machine must be the checkout's version: the archive's
# other files come from the checkout.
if [[ -z "$target" || "$target" == "$host" ]]; then
    reported="$("$binary" --version)"
    [[ "$reported" == "wharf $version "* ]] || {
        echo "error: $binary reports \"$reported\", the checkout is wharf $version" >&2
        exit 1
    }
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir/systemd" "$dir/kubernetes" "$dir/grafana"

# The debug info goes to its own file; the binary keeps its symbol table (so
# a backtrace names functions even without that file) and names the file in
# its .gnu_debuglink section, where gdb and Rust's backtraces look for it.
echo "==> splitting the debug info off $binary"
"$objcopy" --only-keep-debug --compress-debug-sections=zlib "$binary" "$out/$name.debug"
"$objcopy" --strip-debug --add-gnu-debuglink="$out/$name.debug" "$binary" "$dir/wharf"
chmod 0755 "$dir/wharf"
chmod 0644 "$out/$name.debug"

cp "$root/examples/systemd/wharf.toml" "$dir/wharf.toml"
cp "$root/examples/systemd/wharf.service" "$dir/systemd/"
cp "$root"/examples/kubernetes/*.yaml "$dir/kubernetes/"
cp "$root/examples/grafana/wharf-dashboard.json" "$dir/grafana/"

glibc="$(objdump -T "$dir/wharf" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)"
cat >"$dir/INSTALL.md" <<EOF
# wharf $version for ${target:-$host}

Wharf runs WebAssembly message handlers against NATS JetStream.

- \`wharf\`: the host, one binary${glibc:+ (needs glibc ${glibc#GLIBC_} or later)}.
- \`wharf.toml\`: an example config, for \`/etc/wharf/wharf.toml\`.
- \`systemd/wharf.service\`: runs \`wharf run -c /etc/wharf/wharf.toml\` as a
  hardened service.
- \`kubernetes/\`: a ConfigMap, a Deployment, a metrics Service and a KEDA
  ScaledObject (apply it only where KEDA is installed); the Deployment's
  image is built by the \`Containerfile\` in the source tree.
- \`grafana/wharf-dashboard.json\`: a dashboard for the host's metrics.

## Install

Check the download (next to the archive), unpack it and install the binary
outside home directories (the systemd unit hides them):

\`\`\`sh
sha256sum -c $name.sha256
tar -xzf $name.tar.gz && cd $name
sudo install -m 0755 wharf /usr/local/bin/
wharf --version
\`\`\`

## Run it as a systemd service

Edit \`wharf.toml\` (the streams it names must exist; \`wharf run\` does not
create them) and put it next to the handlers' \`.wasm\` files:

\`\`\`sh
sudo install -d /etc/wharf
sudo install -m 0644 wharf.toml orders.wasm /etc/wharf/
wharf check -c /etc/wharf/wharf.toml
sudo cp systemd/wharf.service /etc/systemd/system/
sudo systemctl daemon-reload
sudo systemctl enable --now wharf
journalctl -u wharf -f
\`\`\`

The unit serves \`/metrics\`, \`/healthz\` and \`/readyz\` on
\`127.0.0.1:9464\`; \`systemctl reload wharf\` applies changed handlers.

## Backtraces

The binary carries function names but not file names and lines; those are
in \`$name.debug\`, next to the archive. Copy it next to the binary
(\`/usr/local/bin/$name.debug\`) and a backtrace (\`RUST_BACKTRACE=1\`),
gdb and addr2line show files and lines too.

The README in the source tree documents handlers, the configuration and
operations in full.
EOF

# The same inputs give the same archive: sorted names, no owners, the commit's time.
mtime="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -C "$stage" -cf - "$name" | gzip -9n >"$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" "$name.debug" >"$name.sha256")

echo "==> $out"
(cd "$out" && ls -lh "$name.tar.gz" "$name.debug" "$name.sha256" && du -h "$dir/wharf" | sed "s|$stage/||")
