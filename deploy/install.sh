#!/bin/sh
# Installs ipkeep on one node: the binaries, a CNI network configuration, and
# (unless --no-systemd) the systemd unit with its environment file.
#
#   deploy/install.sh [--bin-dir target/release] [--plugin FILE] [--conflist 10-ipkeep-bridge.conflist]
#                     [--cni-bin-dir /opt/cni/bin] [--cni-conf-dir /etc/cni/net.d]
#                     [--root DIR] [--no-systemd]
#
# --root installs under DIR (for images and tests) and starts nothing.
# The plugin is --plugin FILE if given; else, without --bin-dir, the statically
# linked build of `cargo build-plugin` (target/plugin/release/ipkeep) when there
# is one; else ipkeep from the binaries' directory.
# An existing /etc/ipkeep/ipkeepd.env and cluster secret are never replaced.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=$here/../target/release
bin_dir_given=no
plugin=
conflist=10-ipkeep-bridge.conflist
cni_bin_dir=/opt/cni/bin
cni_conf_dir=/etc/cni/net.d
root=
systemd=yes

while [ $# -gt 0 ]; do
    case $1 in
        --bin-dir) bin_dir=$2; bin_dir_given=yes; shift 2 ;;
        --plugin) plugin=$2; shift 2 ;;
        --conflist) conflist=$2; shift 2 ;;
        --cni-bin-dir) cni_bin_dir=$2; shift 2 ;;
        --cni-conf-dir) cni_conf_dir=$2; shift 2 ;;
        --root) root=$2; shift 2 ;;
        --no-systemd) systemd=no; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$plugin" ]; then
    static_plugin=$here/../target/plugin/release/ipkeep
    if [ "$bin_dir_given" = no ] && [ -x "$static_plugin" ]; then
        plugin=$static_plugin
    else
        plugin=$bin_dir/ipkeep
    fi
fi
if [ ! -x "$plugin" ]; then
    echo "install.sh: $plugin is missing; build with: cargo build-plugin (static) or cargo build --release --workspace --bins" >&2
    exit 1
fi
for b in ipkeepd ipkeepctl; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "install.sh: $bin_dir/$b is missing; build with: cargo build --release --workspace --bins" >&2
        exit 1
    fi
done
if [ ! -f "$here/cni/$conflist" ]; then
    echo "install.sh: no conflist $conflist in $here/cni (choose one of: $(ls "$here/cni" | tr '\n' ' '))" >&2
    exit 1
fi

install -d -m 0755 "$root$cni_bin_dir" "$root$cni_conf_dir" "$root/usr/local/bin"
install -d -m 0700 "$root/etc/ipkeep" "$root/var/lib/ipkeep"
install -d -m 0755 "$root/var/log/ipkeep"
# The plugin is exec'd by the runtime: replace it atomically, never in place.
install -m 0755 "$plugin" "$root$cni_bin_dir/.ipkeep.new"
mv -f "$root$cni_bin_dir/.ipkeep.new" "$root$cni_bin_dir/ipkeep"
install -m 0755 "$bin_dir/ipkeepd" "$bin_dir/ipkeepctl" "$root/usr/local/bin/"
install -m 0644 "$here/cni/$conflist" "$root$cni_conf_dir/$conflist"

if [ "$systemd" = yes ]; then
    install -d -m 0755 "$root/etc/systemd/system"
    install -m 0644 "$here/systemd/ipkeepd.service" "$root/etc/systemd/system/ipkeepd.service"
    if [ ! -e "$root/etc/ipkeep/ipkeepd.env" ]; then
        install -m 0600 "$here/systemd/ipkeepd.env" "$root/etc/ipkeep/ipkeepd.env"
        echo "install.sh: edit /etc/ipkeep/ipkeepd.env (node id, addresses, members) before starting"
    fi
    if [ -z "$root" ]; then
        systemctl daemon-reload
        echo "install.sh: then: systemctl enable --now ipkeepd"
    fi
fi
echo "install.sh: installed into ${root:-/}"
