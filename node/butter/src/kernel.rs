//! What the kernel says about this node's network namespace, for diagnostics.

/// The kernel's `Udp: SndbufErrors` counter of this network namespace (datagrams it refused to
/// send: `ENOBUFS` from a full device queue or, most often on a host running many nodes, a full
/// neighbour table), or `None` where `/proc/net/snmp` is not available.
pub fn udp_send_errors() -> Option<u64> {
    parse_udp_send_errors(&std::fs::read_to_string("/proc/net/snmp").ok()?)
}

/// `SndbufErrors` of the `Udp:` lines of a `/proc/net/snmp` text (a header line of names, then a
/// line of values).
fn parse_udp_send_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names = udp.next()?;
    let values = udp.next()?;
    let i = names.split_whitespace().position(|n| n == "SndbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// What to tell an operator whose node's datagrams the kernel drops.
pub const SEND_DROP_HINT: &str = "the kernel is dropping this node's outgoing datagrams \
    (Udp SndbufErrors); with many nodes on one host the neighbour (ARP) table is the usual \
    cause: it is shared by every namespace and holds 1024 entries by default (dmesg says \
    \"neighbor table overflow\"); raise it, e.g. `sysctl -w net.ipv4.neigh.default.gc_thresh2=16384 \
    net.ipv4.neigh.default.gc_thresh3=32768`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sndbuf_errors_from_the_udp_lines_only() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n\
            Udp: 10 0 0 12 0 7 0\n\
            UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            UdpLite: 0 0 0 0 0 99\n";
        assert_eq!(parse_udp_send_errors(snmp), Some(7));
        assert_eq!(parse_udp_send_errors("Ip: a\nIp: 1\n"), None);
        assert_eq!(parse_udp_send_errors("Udp: SndbufErrors\nUdp: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_has_the_counter() {
        assert!(udp_send_errors().is_some());
    }
}
