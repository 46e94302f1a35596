//! Which addresses an outbound call may reach. Targets the platform configures (upstream
//! issuers, the OTLP collector, `kauth login`'s issuer) may be anywhere, in-cluster included.
//! Targets a team writes into its own objects (a client's `jwksUri`, a relying party's logout
//! URI) must not turn kauth into a proxy into the cluster: loopback, link-local (cloud
//! metadata), private, shared and other special ranges are refused unless the platform lists
//! them. The check runs on every address a name resolves to, at connect time, so a name that
//! resolves differently on a second lookup (DNS rebinding) gains nothing.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// Where calls may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Anywhere: targets the platform itself configured.
    Anywhere,
    /// Public addresses, and those in these networks the platform allows.
    Public {
        /// Networks allowed although not public (e.g. an in-cluster relying party).
        allowed: Vec<IpNet>,
    },
}

impl Reach {
    /// True when a call may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        match self {
            Self::Anywhere => true,
            Self::Public { allowed } => is_public(ip) || allowed.iter().any(|net| net.contains(&ip)),
        }
    }
}

/// True for addresses on the public internet: not loopback, link-local, private, shared
/// (carrier-grade NAT), unspecified, multicast, broadcast, documentation or benchmarking
/// ranges, nor an IPv6 form (mapped, NAT64, 6to4, Teredo) of a non-public IPv4 address.
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
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // SIIT's IPv4-translated form, ::ffff:0:a.b.c.d (RFC 2765), reaches that IPv4 address too.
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return is_public_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b && (s[2..6] != [0; 4] || !is_public_v4(embedded(s[6], s[7])))) // NAT64 (only the /96 layout read)
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64 (RFC 8215): any layout
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only (RFC 6666)
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
        || (s[0] == 0x2002 && !is_public_v4(embedded(s[1], s[2]))) // 6to4
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[..6] == [0; 6])) // IPv4-compatible (deprecated)
}

/// Why a target was refused, in words a team may read: not which address its name resolved
/// to (that would map the cluster's DNS for a team without pods); the log has the address.
pub fn refusal(ip: IpAddr) -> String {
    tracing::info!(address = %ip, "outbound call refused: not a public address");
    REFUSED.to_string()
}

/// The words of a refused target.
pub const REFUSED: &str = "the target is not a public address, and the platform allows no other";

/// The resolver of a guarded connector: resolves with the system's resolver, then keeps only
/// the addresses `reach` permits and fails when none is left.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    pub(super) reach: Reach,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(_) if reach != Reach::Anywhere => Vec::new(),
                Err(e) => return Err(e),
            };
            let permitted: Vec<SocketAddr> = found.iter().copied().filter(|a| reach.permits(a.ip())).collect();
            match (permitted.is_empty(), found.first()) {
                (false, _) => Ok(permitted.into_iter()),
                // A name without a permitted address fails the same way whether it has none
                // or only internal ones: a team learns nothing of how names resolve inside.
                (true, first) => Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    first.map_or_else(|| REFUSED.to_string(), |a| refusal(a.ip())),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_pass_by_default() {
        for public in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(public)), "{public}");
        }
        for inside in [
            "127.0.0.1",
            "10.96.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::127.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b:1:a9fe:a9:fe00:808:808",
            "64:ff9b:0:0:1::808:808",
            "100::1",
            "2001:2::1",
            "2001:10::1",
        ] {
            assert!(!is_public(ip(inside)), "{inside}");
        }
    }

    #[test]
    fn the_platform_may_allow_networks() {
        let reach = Reach::Public {
            allowed: vec!["10.96.0.0/12".parse().unwrap()],
        };
        assert!(reach.permits(ip("10.96.4.2")));
        assert!(!reach.permits(ip("10.0.0.1")));
        assert!(!reach.permits(ip("169.254.169.254")));
        assert!(Reach::Anywhere.permits(ip("127.0.0.1")));
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_a_private_address() {
        use tower::Service;
        let mut resolver = GuardedResolver {
            reach: Reach::Public { allowed: vec![] },
        };
        let name: Name = "localhost".parse().unwrap();
        let err = resolver.call(name).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    }
}
