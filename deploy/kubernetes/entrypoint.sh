#!/bin/sh
# Entrypoint of the ipkeep DaemonSet: no API server access, no RBAC. The
# node's identity comes from the members file (mounted from a ConfigMap):
#   <kubernetes node name> <raft id> <peer address>
# one line per member of the new cluster. A node not listed waits to be
# added (`ipkeepctl member add ID ADDR` on a member).
#
#   ipkeep-entrypoint install   copy the plugin and the conflist to the host
#   ipkeep-entrypoint daemon    run ipkeepd for this node
set -eu

members=${IPKEEP_MEMBERS_FILE:-/etc/ipkeep-config/members}

case ${1:-daemon} in
install)
    install -m 0755 /usr/local/bin/ipkeep /host/opt/cni/bin/.ipkeep.new
    mv -f /host/opt/cni/bin/.ipkeep.new /host/opt/cni/bin/ipkeep
    conflist=${IPKEEP_CONFLIST:-/etc/ipkeep-config/10-ipkeep.conflist}
    install -m 0644 "$conflist" "/host/etc/cni/net.d/$(basename "$conflist")"
    echo "installed the ipkeep plugin and $(basename "$conflist")"
    ;;
daemon)
    : "${NODE_NAME:?NODE_NAME must be set (fieldRef spec.nodeName)}"
    initial=$(awk 'NF == 3 { printf "%s%s=%s", sep, $2, $3; sep = "," }' "$members")
    line=$(awk -v n="$NODE_NAME" '$1 == n { print $2, $3 }' "$members")
    if [ -n "$line" ]; then
        set -- --node-id "${line% *}" --listen "${line#* }" --initial-cluster "$initial"
    else
        id=${IPKEEP_NODE_ID:?node $NODE_NAME is not in $members: set IPKEEP_NODE_ID and IPKEEP_LISTEN to join}
        set -- --node-id "$id" --listen "${IPKEEP_LISTEN:?set IPKEEP_LISTEN}" --join
    fi
    exec ipkeepd --node-name "$NODE_NAME" --data-dir /var/lib/ipkeep \
        --socket /run/ipkeep/ipkeepd.sock \
        --cluster-secret-file /etc/ipkeep-secret/cluster.secret "$@"
    ;;
*)
    echo "usage: ipkeep-entrypoint install|daemon" >&2
    exit 2
    ;;
esac
