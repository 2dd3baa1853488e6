//! Where a request comes from, behind reverse proxies.

use ipnet::IpNet;
use std::net::IpAddr;

/// The client's address: the peer's, unless the peer is one of the
/// operator's `trusted` proxies; then the right-most address of
/// `X-Forwarded-For` (all its values, in order) that is not a trusted
/// proxy. Entries left of it are the client's own claims and are never
/// believed; a header that does not parse leaves the peer's address.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut last = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return peer;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        last = ip;
    }
    last
}

/// Parse the operator's list of trusted proxies: addresses or CIDR ranges.
pub fn parse_proxies(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("trusted_proxies: {s:?} is not an address or a CIDR range"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_proxies_are_believed_and_only_for_their_own_hop() {
        let trusted = parse_proxies(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        // A client straight at the server: its own header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.7"), &["1.2.3.4"], &trusted),
            ip("203.0.113.7")
        );
        // Through the proxy: the address the proxy saw.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
        // A client claiming to be someone else in front of the proxy: the
        // proxy appends what it saw, and that is what counts.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["1.2.3.4, 203.0.113.7"], &trusted),
            ip("203.0.113.7")
        );
        // Two proxies, two header lines.
        assert_eq!(
            client_address(ip("::1"), &["198.51.100.9", "10.1.1.1"], &trusted),
            ip("198.51.100.9")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["not-an-ip"], &trusted),
            ip("10.0.0.2")
        );
        // No proxies configured: never believed.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["203.0.113.7"], &[]),
            ip("10.0.0.2")
        );
        assert!(parse_proxies(&["10.0.0.0/33".into()]).is_err());
    }
}
