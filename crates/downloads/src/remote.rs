//! Which hosts a download may reach. A download the user starts (the CLI, the app) may fetch from anywhere; one a
//! client of the HTTP API asks for may reach public addresses only, checked after name resolution, on every
//! redirect, and again when the connection is made (a name that resolves to a public address for the check and to a
//! private one for the connection — DNS rebinding — is refused too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Where a download may fetch from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reach {
    /// Any host, this machine and the local network included.
    #[default]
    Anywhere,
    /// Public internet addresses only: never loopback, private, link-local, shared (CGNAT) or reserved ones.
    PublicOnly,
}

/// Whether an address belongs to the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(low(s[6], s[7])); // IPv4-compatible (deprecated)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2])); // 6to4
    }
    None
}

/// Why a URL may not be fetched under a reach.
pub(crate) fn refusal(url: &Url, addr: IpAddr) -> String {
    format!(
        "{url} leads to {addr}, an address on this machine or its local network; over the API DiffuGen downloads \
         from public addresses only (start the download in the app or with `diffugen models pull` to fetch from \
         your own network, or start the server with --allow-private-downloads)"
    )
}

/// Checks every address `url`'s host resolves to; the first non-public one is refused.
pub(crate) async fn check(url: &Url, reach: Reach) -> Result<(), String> {
    if reach == Reach::Anywhere {
        return Ok(());
    }
    let host = url.host().ok_or_else(|| format!("{url} names no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| format!("{url}: the name {name} cannot be resolved ({e})"))?
            .map(|a: SocketAddr| a.ip())
            .collect(),
    };
    match addrs.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(refusal(url, ip)),
        None => Ok(()),
    }
}

/// A resolver that drops non-public addresses, for the connection itself (DNS rebinding between check and connect).
pub(crate) struct PublicOnlyResolver;

/// The resolver's refusal, recognised in a failed request's error chain so that it is not retried.
#[derive(Debug)]
pub(crate) struct NotPublic(pub String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotPublic {}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addrs.iter().find(|a| !is_public(a.ip())) {
                let reason = format!(
                    "{host} resolves to {}, which is not a public address",
                    private.ip()
                );
                return Err(Box::new(NotPublic(reason)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver's refusal inside a request error, if that is why it failed.
pub(crate) fn not_public(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<NotPublic>() {
            return Some(refused.0.clone());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_their_ipv6_disguises_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "18.244.0.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_url_naming_this_machine_is_refused_when_only_public_hosts_may_be_reached() {
        for url in [
            "http://127.0.0.1:8080/model.gguf",
            "http://[::1]/model.gguf",
            "http://localhost/model.gguf",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let url = Url::parse(url).unwrap();
            let refused = check(&url, Reach::PublicOnly).await.unwrap_err();
            assert!(refused.contains("public addresses only"), "{refused}");
            assert!(check(&url, Reach::Anywhere).await.is_ok());
        }
    }
}
