//! Where Keyward may send requests (event subscriptions' webhooks, audit webhook sinks): public
//! addresses only, unless `[webhooks] allow_private_addresses` says otherwise.
//!
//! Checked twice for a subscription: when it is created (an address literal, or a name
//! resolving to a non-public address, is refused with a clear error), and on every POST, where
//! the one HTTP client ([`crate::sender::WebhookSender`]) resolves names through [`PublicOnly`]
//! and connects only to the public addresses it returns, so a name that later resolves elsewhere
//! (DNS rebinding) reaches nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918), link-local,
/// shared (RFC 6598), unique-local, "this network", broadcast, multicast, documentation,
/// benchmarking or reserved, and not an IPv4-mapped or NAT64 form of one; IPv6 forms that embed
/// an IPv4 address otherwise (IPv4-compatible, IPv4-translated, NAT64 local-use, 6to4, Teredo)
/// are never public.
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
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded = || {
        let [x, y] = [s[6].to_be_bytes(), s[7].to_be_bytes()];
        Ipv4Addr::new(x[0], x[1], y[0], y[1])
    };
    // NAT64's well-known prefix (64:ff9b::/96, RFC 6052) carries an IPv4 address in its last
    // 32 bits, which a NAT64 gateway on the path would reach: it must be public itself.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded());
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || embeds_ipv4(s)
        || s[..4] == [0x100, 0, 0, 0] // discard-only (RFC 6666)
        || s[0] == 0x2001 && s[1] == 0x0db8 // documentation
        || s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 // benchmarking (RFC 5180)
        || s[0] & 0xffc0 == 0xfec0) // site-local (deprecated)
}

/// Whether `s` is one of the IPv6 forms that carry an IPv4 address a router or tunnel endpoint
/// on the way may translate to (issue 18, item 9): refused outright rather than decoded, since
/// none is where a webhook receiver lives, and a decoding mistake would be an SSRF. The
/// IPv4-mapped form (`::ffff:0:0/96`) and NAT64's well-known prefix are decoded and checked by
/// [`is_public_v6`] instead.
fn embeds_ipv4(s: [u16; 8]) -> bool {
    // IPv4-compatible (`::a.b.c.d`, RFC 4291 2.5.5.1, deprecated), which `::` and `::1` also
    // match (both refused anyway).
    s[..6] == [0, 0, 0, 0, 0, 0]
        // IPv4-translated (`::ffff:0:a.b.c.d`, RFC 2765).
        || s[..6] == [0, 0, 0, 0, 0xffff, 0]
        // NAT64 local-use prefix (64:ff9b:1::/48, RFC 8215): a network's own translator.
        || s[..3] == [0x64, 0xff9b, 1]
        // 6to4 (2002::/16, RFC 3056): an IPv4 address in bits 16..48.
        || s[0] == 0x2002
        // Teredo (2001::/32, RFC 4380): a server and an obfuscated client IPv4 address.
        || s[..2] == [0x2001, 0]
}

/// Checks a webhook URL before a subscription is stored: an address literal must be public; a
/// name must not resolve to any non-public address. A name that does not resolve now is
/// accepted (deliveries check again, and fail until it resolves to a public address).
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| "url: not a valid URL".to_owned())?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host(&parsed) {
        Some(Ok(ip)) => vec![ip],
        Some(Err(name)) => match tokio::net::lookup_host((name, port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(_) => Vec::new(),
        },
        None => return Err("url: no host".to_owned()),
    };
    match addrs.into_iter().find(|ip| !is_public(*ip)) {
        Some(ip) => Err(format!(
            "url: {ip} is not a public address; webhooks may only reach public addresses \
             (the server's operator can allow others with [webhooks] allow_private_addresses)"
        )),
        None => Ok(()),
    }
}

/// Whether a delivery to `url` may go ahead: an address literal is checked here (the HTTP client
/// does not resolve those); names are checked by [`PublicOnly`].
pub fn literal_allowed(url: &str) -> bool {
    match reqwest::Url::parse(url).as_ref().ok().and_then(host) {
        Some(Ok(ip)) => is_public(ip),
        Some(Err(_)) => true,
        None => false,
    }
}

/// A URL's host: an address literal, or the name to resolve.
fn host(url: &reqwest::Url) -> Option<Result<IpAddr, &str>> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(Ok(IpAddr::V4(ip))),
        url::Host::Ipv6(ip) => Some(Ok(IpAddr::V6(ip))),
        url::Host::Domain(name) => Some(Err(name)),
    }
}

/// A resolver for the webhook HTTP client that returns only public addresses, and fails when a
/// name has none.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{} resolves to no public address; webhooks may only reach public addresses",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            // Forms embedding a private IPv4 address (issue 18, item 9), each refused.
            "::127.0.0.1",
            "::a9fe:a9fe",
            "::10.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:abcd::7f00:1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::a9fe:a9fe",
            "100::1",
            "2001:2::1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} must not count as public");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert!(is_public(ip), "{allowed} is public");
        }
    }

    #[tokio::test]
    async fn urls_reaching_private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/x",
            "http://localhost:8080/x",
        ] {
            let err = check_url(url, false).await.unwrap_err();
            assert!(err.contains("not a public address"), "{url}: {err}");
            assert!(
                check_url(url, true).await.is_ok(),
                "{url} allowed when configured"
            );
        }
        assert!(check_url("https://8.8.8.8/hook", false).await.is_ok());
        assert!(!literal_allowed("http://127.0.0.1/x"));
        assert!(!literal_allowed("http://[::ffff:10.0.0.1]/x"));
        for embedded in [
            "http://[::127.0.0.1]/x",
            "http://[::a9fe:a9fe]/latest/meta-data",
            "http://[64:ff9b::169.254.169.254]/x",
            "http://[64:ff9b:1::a9fe:a9fe]/x",
            "http://[2002:a9fe:a9fe::1]/x",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
            "http://[::ffff:7f00:1]/x",
        ] {
            assert!(!literal_allowed(embedded), "{embedded}");
            let err = check_url(embedded, false).await.unwrap_err();
            assert!(err.contains("not a public address"), "{embedded}: {err}");
        }
        assert!(literal_allowed("http://8.8.8.8/x"));
        assert!(literal_allowed("https://hooks.example/x"));
    }

    #[tokio::test]
    async fn the_delivery_resolver_returns_no_private_address() {
        use reqwest::dns::Resolve;
        let err = PublicOnly
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost resolves only to loopback");
        assert!(err.to_string().contains("no public address"), "{err}");
    }
}
