#!/bin/sh
# Builds the project's SmartModules into byte-reproducible .wasm files.
#
#   ./build.sh [OUT_DIR]            every crate (a directory with smartmodule.toml) into
#                                   OUT_DIR/<name>.wasm plus OUT_DIR/<name>.toml (default: dist)
#   ./build.sh --check              rebuild into a temporary directory and fail if any byte
#                                   differs from dist/
#   ./build.sh --fixtures DIR       the engine's test fixtures (DIR/rust/*.rs) into DIR/*.wasm
#
# The build uses Debian's rustc (/usr/bin/rustc, 1.63 on bookworm) with its wasm32 std,
# never a rustup toolchain that may come first on PATH: the committed bytes depend on
# the exact compiler. Missing packages are installed with apt-get.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
RUSTC=/usr/bin/rustc
PINNED_RUSTC="rustc 1.63.0"

ensure_toolchain() {
    if [ -x "$RUSTC" ] && [ -d /usr/lib/rustlib/wasm32-unknown-unknown/lib ] \
        && [ -d /usr/lib/rustlib/wasm32-wasi/lib ]; then
        return
    fi
    echo "build.sh: installing Debian's rustc and libstd-rust-dev-wasm32" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y rustc libstd-rust-dev-wasm32
}

# compile SRC OUT TARGET CRATE_NAME
compile() {
    # Fixed flags and relative paths keep the output identical on every machine that
    # has the same rustc: one codegen unit, no debug info, symbols stripped, and the
    # source directory remapped so panic locations carry no absolute path.
    "$RUSTC" --edition 2021 --crate-type cdylib --target "$3" --crate-name "$4" \
        -C opt-level=3 -C panic=abort -C lto=fat -C codegen-units=1 \
        -C debuginfo=0 -C strip=symbols -C incremental= \
        --remap-path-prefix "$HERE=." --remap-path-prefix "$(dirname "$1")=." \
        -o "$2" "$1"
    chmod 644 "$2"
}

build_modules() {
    out=$1
    mkdir -p "$out"
    for manifest in "$HERE"/*/smartmodule.toml; do
        dir=$(dirname "$manifest")
        name=$(basename "$dir")
        compile "$dir/src/lib.rs" "$out/$name.wasm" wasm32-unknown-unknown "$(echo "$name" | tr - _)"
        cp "$manifest" "$out/$name.toml"
        echo "built $out/$name.wasm ($(wc -c < "$out/$name.wasm") bytes)"
    done
}

# build_fixtures FIXTURE_DIR [OUT_DIR]
build_fixtures() {
    dir=$(cd "$1" && pwd)
    out=${2:-$dir}
    for src in "$dir"/rust/*.rs; do
        name=$(basename "$src" .rs)
        case "$name" in
            sdk) continue ;;            # shared helper, included by the others
            wasi_*) target=wasm32-wasi ;;
            *) target=wasm32-unknown-unknown ;;
        esac
        compile "$src" "$out/$name.wasm" "$target" "$name"
        echo "built $out/$name.wasm ($(wc -c < "$out/$name.wasm") bytes)"
    done
}

# compare BUILT_DIR COMMITTED_DIR LABEL FIX: every built file equals the committed one
compare() {
    differs=0
    for f in "$1"/*; do
        name=$(basename "$f")
        if ! cmp -s "$f" "$2/$name"; then
            echo "$3/$name differs from a fresh build: run '$4' and commit it" >&2
            differs=1
        fi
    done
    return $differs
}

check_rustc() {
    version=$("$RUSTC" --version)
    case "$version" in
        "$PINNED_RUSTC"*) ;;
        *) echo "build.sh: warning: $version is not $PINNED_RUSTC; the bytes will differ from the committed ones" >&2 ;;
    esac
}

ensure_toolchain
check_rustc
case "${1:-}" in
    --check)
        # Also the engine's test fixtures, if this checkout has them.
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        mkdir "$tmp/dist" "$tmp/fixtures"
        build_modules "$tmp/dist" > /dev/null
        status=0
        compare "$tmp/dist" "$HERE/dist" smartmodules/dist "make -C smartmodules" || status=1
        for f in "$HERE"/dist/*; do
            [ -e "$tmp/dist/$(basename "$f")" ] || { echo "smartmodules/dist/$(basename "$f") has no source crate" >&2; status=1; }
        done
        fixtures="$HERE/../tests/gateway/smartmodules/fixtures"
        if [ -d "$fixtures/rust" ]; then
            build_fixtures "$fixtures" "$tmp/fixtures" > /dev/null
            compare "$tmp/fixtures" "$fixtures" tests/gateway/smartmodules/fixtures \
                "make -C smartmodules fixtures" || status=1
        fi
        [ $status = 0 ] && echo "smartmodules/dist and the test fixtures are up to date"
        exit $status
        ;;
    --fixtures)
        build_fixtures "$2"
        ;;
    *)
        build_modules "${1:-$HERE/dist}"
        ;;
esac
