//! Where webhooks may go: URL checks and the address policy against server-side request forgery.
//!
//! A webhook URL is chosen by a user, so without a policy TaskFlow would POST wherever it
//! points: its own admin port on loopback, a cloud metadata service on link-local, databases on
//! the private network. The policy refuses every address that is not public unicast (see
//! [`SpecialRange`]) unless [`TargetPolicy::allow_private`] is set (development, tests, or a
//! deployment that delivers only inside its own network).
//!
//! Two checks, one rule:
//!
//! - at registration, [`validate_webhook_url`] checks the syntax and any literal IP address
//!   (a host name is only resolved at delivery: its addresses may change legitimately);
//! - at delivery, the sender's HTTP client resolves names through [`PolicyResolver`], which drops
//!   refused addresses and hands the client only checked ones. The connection goes to exactly
//!   the addresses that were checked, from that same lookup, so a name that answers a public
//!   address first and a private one later (DNS rebinding) cannot slip through between check
//!   and connect.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::{Deserialize, Serialize};

/// Longest accepted webhook URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Which addresses webhooks may be delivered to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetPolicy {
    /// Also allow loopback, private, link-local and the other special ranges. Off by default;
    /// turn it on only where every receiver is trusted (development, tests, an internal
    /// deployment).
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Refuses every special range.
    pub const PUBLIC_ONLY: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    /// Allows every address.
    pub const ALLOW_PRIVATE: TargetPolicy = TargetPolicy {
        allow_private: true,
    };

    /// Why `address` is refused, or `None` if webhooks may go there.
    pub fn refusal(&self, address: IpAddr) -> Option<SpecialRange> {
        if self.allow_private {
            None
        } else {
            SpecialRange::of(address)
        }
    }

    /// The addresses of `host` a connection may use: `addresses` without the refused ones.
    /// Fails, naming the first refused address, if none is left.
    pub fn check_resolved(
        &self,
        host: &str,
        addresses: &[IpAddr],
    ) -> Result<Vec<IpAddr>, TargetError> {
        let allowed: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|address| self.refusal(*address).is_none())
            .collect();
        if allowed.is_empty()
            && let Some((address, range)) = addresses
                .iter()
                .find_map(|address| self.refusal(*address).map(|range| (*address, range)))
        {
            return Err(TargetError::RefusedAddress {
                host: host.to_owned(),
                address,
                range,
            });
        }
        Ok(allowed)
    }
}

/// A non-public address range, named in refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpecialRange {
    /// `0.0.0.0`, `::` (connects to the local host on many systems).
    Unspecified,
    /// `0.0.0.0/8` other than `0.0.0.0`.
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`; and the deprecated IPv6 site-local `fec0::/10`.
    Private,
    /// `169.254/16` (cloud metadata services live here), `fe80::/10`.
    LinkLocal,
    /// `100.64/10`, carrier-grade NAT (RFC 6598).
    SharedAddressSpace,
    /// `fc00::/7` (RFC 4193).
    UniqueLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15` (RFC 2544).
    Benchmarking,
    /// `192.0.0/24`, `240/4`, `100::/64`, and IPv4-compatible `::/96`.
    Reserved,
}

impl SpecialRange {
    /// The range `address` belongs to, or `None` for a public unicast address. IPv6 addresses
    /// that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4
    /// `2002::/16`) are judged by the embedded address.
    pub fn of(address: IpAddr) -> Option<SpecialRange> {
        match address {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(address: Ipv4Addr) -> Option<SpecialRange> {
        let [a, b, c, _] = address.octets();
        Some(match (a, b, c) {
            _ if address.is_unspecified() => Self::Unspecified,
            (0, _, _) => Self::ThisNetwork,
            (127, _, _) => Self::Loopback,
            (10, _, _) | (192, 168, _) => Self::Private,
            (172, 16..=31, _) => Self::Private,
            (169, 254, _) => Self::LinkLocal,
            (100, 64..=127, _) => Self::SharedAddressSpace,
            (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Self::Documentation,
            (198, 18..=19, _) => Self::Benchmarking,
            (192, 0, 0) => Self::Reserved,
            (224..=239, _, _) => Self::Multicast,
            _ if address.is_broadcast() => Self::Broadcast,
            (240..=255, _, _) => Self::Reserved,
            _ => return None,
        })
    }

    fn of_v6(address: Ipv6Addr) -> Option<SpecialRange> {
        let segments = address.segments();
        let embedded_v4 = |high: u16, low: u16| {
            let [a, b] = high.to_be_bytes();
            let [c, d] = low.to_be_bytes();
            Ipv4Addr::new(a, b, c, d)
        };
        if address.is_unspecified() {
            return Some(Self::Unspecified);
        }
        if address.is_loopback() {
            return Some(Self::Loopback);
        }
        if let Some(v4) = address.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        match segments {
            // NAT64 well-known prefix: the gateway would connect to the embedded IPv4 address.
            [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return Self::of_v4(embedded_v4(high, low)),
            // IPv4-compatible (deprecated).
            [0, 0, 0, 0, 0, 0, _, _] => return Some(Self::Reserved),
            // 6to4: the relay would reach the embedded IPv4 address.
            [0x2002, high, low, ..] => return Self::of_v4(embedded_v4(high, low)),
            [0x100, 0, 0, 0, ..] => return Some(Self::Reserved),
            _ => {}
        }
        let first = segments[0];
        Some(match first {
            _ if first & 0xfe00 == 0xfc00 => Self::UniqueLocal,
            _ if first & 0xffc0 == 0xfe80 => Self::LinkLocal,
            _ if first & 0xffc0 == 0xfec0 => Self::Private,
            _ if first & 0xff00 == 0xff00 => Self::Multicast,
            _ if first == 0x2001 && segments[1] == 0x0db8 => Self::Documentation,
            _ if first == 0x3fff && segments[1] & 0xf000 == 0 => Self::Documentation,
            _ => return None,
        })
    }

    /// A short description for messages.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            Self::Loopback => "loopback",
            Self::Private => "private-network",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "carrier-grade NAT (100.64.0.0/10)",
            Self::UniqueLocal => "unique-local (fc00::/7)",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking (198.18.0.0/15)",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Why a webhook URL cannot be used. Every variant is permanent for delivery.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not a URL.
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    /// A scheme other than `http` and `https`.
    #[error("scheme `{0}` is not allowed; use http or https")]
    UnsupportedScheme(String),
    /// The URL carries a user name or password (they would be sent, and logged, with every
    /// request); authenticate receivers with the signing secret instead.
    #[error(
        "the URL must not contain a user name or password; receivers check the signature instead"
    )]
    Credentials,
    /// No host (e.g. `http:///path`).
    #[error("the URL has no host")]
    MissingHost,
    /// A name that always means this machine (`localhost`, `*.localhost`).
    #[error("`{0}` names the local machine; webhook targets must be public")]
    LocalName(String),
    /// The host is, or resolves only to, a refused address.
    #[error("{}", refused_message(host, address, range))]
    RefusedAddress {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Its range.
        range: SpecialRange,
    },
}

fn refused_message(host: &str, address: &IpAddr, range: &SpecialRange) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']') == address.to_string();
    if literal {
        format!("`{host}` is a {range} address; webhook targets must be public")
    } else {
        format!("`{host}` resolves to {address}, a {range} address; webhook targets must be public")
    }
}

/// Checks a webhook URL at registration (and again before every delivery): `http`/`https`, no
/// user name or password, a host, and, for a literal IP address or a local name, the policy.
/// Host names are resolved only at delivery. Returns the parsed URL.
pub fn validate_webhook_url(url: &str, policy: TargetPolicy) -> Result<Url, TargetError> {
    if url.len() > MAX_URL_LEN {
        return Err(TargetError::InvalidUrl(format!(
            "longer than {MAX_URL_LEN} bytes"
        )));
    }
    let parsed =
        Url::parse(url.trim()).map_err(|error| TargetError::InvalidUrl(error.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(TargetError::UnsupportedScheme(
                other.chars().take(32).collect(),
            ));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let refused = |host: &str, address: IpAddr| {
        policy
            .refusal(address)
            .map(|range| TargetError::RefusedAddress {
                host: host.to_owned(),
                address,
                range,
            })
    };
    let error = match parsed.host() {
        None => Some(TargetError::MissingHost),
        Some(url::Host::Ipv4(v4)) => refused(&v4.to_string(), IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => refused(&format!("[{v6}]"), IpAddr::V6(v6)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                Some(TargetError::MissingHost)
            } else if !policy.allow_private && (name == "localhost" || name.ends_with(".localhost"))
            {
                Some(TargetError::LocalName(name))
            } else {
                None
            }
        }
    };
    match error {
        Some(error) => Err(error),
        None => Ok(parsed),
    }
}

/// Resolves host names to IP addresses. [`SystemLookup`] asks the operating system; tests pass
/// their own to simulate DNS answers (e.g. rebinding).
pub trait HostLookup: Send + Sync + 'static {
    /// The addresses of `host`.
    fn lookup(&self, host: String)
    -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (through tokio).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    }
}

/// The HTTP client's resolver: looks a name up once and hands the client only the addresses
/// the policy allows, so the connection uses exactly what was checked. A name with no allowed
/// address fails with a [`TargetError`] the sender finds in the error chain.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: TargetPolicy,
    lookup: Arc<dyn HostLookup>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy` on the answers of `lookup`.
    pub fn new(policy: TargetPolicy, lookup: Arc<dyn HostLookup>) -> Self {
        Self { policy, lookup }
    }

    /// The checked addresses of `host`: the lookup's answer filtered by the policy.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let addresses = self
            .lookup
            .lookup(host.to_owned())
            .await
            .map_err(ResolveError::Lookup)?;
        if addresses.is_empty() {
            return Err(ResolveError::Lookup(io::Error::new(
                io::ErrorKind::NotFound,
                format!("`{host}` has no addresses"),
            )));
        }
        Ok(self.policy.check_resolved(host, &addresses)?)
    }
}

impl fmt::Debug for PolicyResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why [`PolicyResolver::resolve_checked`] produced no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name could not be resolved (may be temporary).
    #[error("could not resolve: {0}")]
    Lookup(io::Error),
    /// Every address is refused.
    #[error(transparent)]
    Refused(#[from] TargetError),
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            match resolver.resolve_checked(name.as_str()).await {
                // Port 0: the client fills in the URL's port.
                Ok(addresses) => Ok(Box::new(
                    addresses
                        .into_iter()
                        .map(|address| SocketAddr::new(address, 0)),
                ) as Addrs),
                Err(ResolveError::Refused(refused)) => Err(refused.into()),
                Err(ResolveError::Lookup(error)) => Err(error.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_recognised() {
        use SpecialRange::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(ThisNetwork)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("192.0.2.10", Some(Documentation)),
            ("198.51.100.1", Some(Documentation)),
            ("203.0.113.7", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("192.0.0.8", Some(Reserved)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Reserved)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:c0a8:101::1", Some(Private)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff:0fff::1", Some(Documentation)),
            ("100::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        for (address, expected) in cases {
            assert_eq!(SpecialRange::of(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allow_private_allows_everything() {
        for address in ["127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "8.8.8.8"] {
            assert_eq!(TargetPolicy::ALLOW_PRIVATE.refusal(ip(address)), None);
        }
        assert_eq!(
            TargetPolicy::PUBLIC_ONLY.refusal(ip("127.0.0.1")),
            Some(SpecialRange::Loopback)
        );
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let policy = TargetPolicy::PUBLIC_ONLY;
        // A name answering only private addresses is refused, naming the first one.
        let error = policy
            .check_resolved("internal.example", &[ip("10.0.0.5"), ip("fd00::5")])
            .unwrap_err();
        assert_eq!(
            error,
            TargetError::RefusedAddress {
                host: "internal.example".into(),
                address: ip("10.0.0.5"),
                range: SpecialRange::Private,
            }
        );
        assert!(error.to_string().contains("private-network"), "{error}");
        // A mixed answer keeps only the public addresses: the client never sees the others.
        assert_eq!(
            policy
                .check_resolved("mixed.example", &[ip("127.0.0.1"), ip("93.184.216.34")])
                .unwrap(),
            vec![ip("93.184.216.34")]
        );
        assert_eq!(
            TargetPolicy::ALLOW_PRIVATE
                .check_resolved("mixed.example", &[ip("127.0.0.1")])
                .unwrap(),
            vec![ip("127.0.0.1")]
        );
    }

    /// Answers a public address to the first lookup and loopback to every later one, like a
    /// rebinding attacker's DNS server with a zero TTL.
    struct Rebinding(std::sync::atomic::AtomicUsize);

    impl HostLookup for Rebinding {
        fn lookup(
            &self,
            _host: String,
        ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>> {
            let call = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = if call == 0 {
                ip("93.184.216.34")
            } else {
                ip("127.0.0.1")
            };
            Box::pin(async move { Ok(vec![answer]) })
        }
    }

    #[tokio::test]
    async fn each_resolution_is_checked_so_rebinding_is_refused() {
        let resolver = PolicyResolver::new(
            TargetPolicy::PUBLIC_ONLY,
            Arc::new(Rebinding(Default::default())),
        );
        assert_eq!(
            resolver.resolve_checked("rebind.example").await.unwrap(),
            vec![ip("93.184.216.34")]
        );
        let refused = resolver
            .resolve_checked("rebind.example")
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                ResolveError::Refused(TargetError::RefusedAddress {
                    range: SpecialRange::Loopback,
                    ..
                })
            ),
            "{refused:?}"
        );
        // Through the reqwest interface the refusal stays a downcastable TargetError.
        let via_reqwest = Resolve::resolve(&resolver, "rebind.example".parse().unwrap()).await;
        let error = via_reqwest.err().unwrap();
        assert!(error.downcast_ref::<TargetError>().is_some(), "{error}");
    }

    #[test]
    fn url_validation_table() {
        let public = TargetPolicy::PUBLIC_ONLY;
        let ok = [
            "https://hooks.example.com/taskflow",
            "http://hooks.example.com:8080/a?b=c",
            "https://93.184.216.34/hook",
            "https://[2606:4700:4700::1111]/hook",
            "HTTPS://Hooks.Example.COM/x",
        ];
        for url in ok {
            assert!(validate_webhook_url(url, public).is_ok(), "{url}");
        }
        let refused = |url: &str| validate_webhook_url(url, public).unwrap_err();
        assert!(matches!(refused("not a url"), TargetError::InvalidUrl(_)));
        assert!(matches!(
            refused("/relative/path"),
            TargetError::InvalidUrl(_)
        ));
        assert!(matches!(
            refused(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))),
            TargetError::InvalidUrl(_)
        ));
        assert_eq!(
            refused("ftp://example.com/x"),
            TargetError::UnsupportedScheme("ftp".into())
        );
        assert_eq!(
            refused("file:///etc/passwd"),
            TargetError::UnsupportedScheme("file".into())
        );
        assert_eq!(
            refused("javascript:alert(1)"),
            TargetError::UnsupportedScheme("javascript".into())
        );
        assert_eq!(
            refused("https://user:pw@example.com/"),
            TargetError::Credentials
        );
        assert_eq!(
            refused("https://user@example.com/"),
            TargetError::Credentials
        );
        assert_eq!(
            refused("http://localhost:8080/"),
            TargetError::LocalName("localhost".into())
        );
        assert_eq!(
            refused("http://api.LOCALHOST./"),
            TargetError::LocalName("api.localhost".into())
        );
        for (url, range) in [
            ("http://127.0.0.1/", SpecialRange::Loopback),
            ("http://2130706433/", SpecialRange::Loopback),
            ("http://0x7f.1/", SpecialRange::Loopback),
            ("http://[::1]:3000/", SpecialRange::Loopback),
            ("http://[::ffff:127.0.0.1]/", SpecialRange::Loopback),
            (
                "http://169.254.169.254/latest/meta-data/",
                SpecialRange::LinkLocal,
            ),
            ("http://10.1.2.3/", SpecialRange::Private),
            ("http://192.168.0.10/", SpecialRange::Private),
            ("http://100.100.100.100/", SpecialRange::SharedAddressSpace),
            ("http://[fd00::1]/", SpecialRange::UniqueLocal),
            ("http://[fe80::1]/", SpecialRange::LinkLocal),
            ("http://0.0.0.0:8080/", SpecialRange::Unspecified),
            ("http://224.0.0.1/", SpecialRange::Multicast),
            ("http://192.0.2.1/", SpecialRange::Documentation),
        ] {
            match refused(url) {
                TargetError::RefusedAddress { range: got, .. } => assert_eq!(got, range, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let message = refused("http://169.254.169.254/").to_string();
        assert_eq!(
            message,
            "`169.254.169.254` is a link-local address; webhook targets must be public"
        );
        // The same local targets pass when private targets are allowed.
        for url in ["http://127.0.0.1:9/", "http://localhost/", "http://[::1]/"] {
            assert!(
                validate_webhook_url(url, TargetPolicy::ALLOW_PRIVATE).is_ok(),
                "{url}"
            );
        }
        // Syntax and credentials are checked regardless of the policy.
        assert!(validate_webhook_url("ftp://127.0.0.1/", TargetPolicy::ALLOW_PRIVATE).is_err());
        assert!(
            validate_webhook_url("http://a:b@127.0.0.1/", TargetPolicy::ALLOW_PRIVATE).is_err()
        );
    }
}
