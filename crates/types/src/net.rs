//! Network endpoints as people write them: `host:port`, where the host is an IP address or a
//! DNS name (resolved when the node starts, through the system's resolver and its hosts file).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a `host:port` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not HOST:PORT ({reason}); e.g. 10.0.0.5:26600 or node-2.coop.example:26600")]
pub struct HostPortError {
    pub input: String,
    pub reason: &'static str,
}

/// `host:port`: an IP address (IPv6 in brackets) or a DNS name, and a port.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The address the host resolves to now (an IP address is itself); IPv4 first where a name
    /// has both.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.socket_addr() {
            return Ok(a);
        }
        let all: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or(all.first())
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to no address", self.host),
                )
            })
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> HostPort {
        HostPort {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// A DNS name: labels of letters, digits and hyphens (not at either end), at most 63 bytes
/// each and 253 in all.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<HostPort, HostPortError> {
        let bad = |reason| HostPortError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if let Ok(a) = t.parse::<SocketAddr>() {
            return Ok(a.into());
        }
        let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not 0 to 65535"))?;
        if host.starts_with('[') || host.contains(':') {
            return Err(bad("not an IPv6 address in brackets"));
        }
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_names_parse_and_print_back() {
        for s in [
            "10.0.0.5:26600",
            "[::1]:8645",
            "node-2.coop.example:26600",
            "localhost:1",
        ] {
            assert_eq!(s.parse::<HostPort>().unwrap().to_string(), s);
        }
        assert_eq!(
            "Node-2.Coop:9".parse::<HostPort>().unwrap().host(),
            "node-2.coop"
        );
        let ip: HostPort = "127.0.0.1:7".parse().unwrap();
        assert_eq!(ip.socket_addr(), Some("127.0.0.1:7".parse().unwrap()));
        assert_eq!(ip.resolve().unwrap(), "127.0.0.1:7".parse().unwrap());
        assert_eq!(
            "localhost:7".parse::<HostPort>().unwrap().socket_addr(),
            None
        );
        assert!("localhost:7"
            .parse::<HostPort>()
            .unwrap()
            .resolve()
            .unwrap()
            .ip()
            .is_loopback());
    }

    #[test]
    fn what_is_not_host_and_port_is_refused_with_the_reason() {
        for (s, why) in [
            ("node-2", "no port"),
            ("node-2:port", "0 to 65535"),
            ("node-2:70000", "0 to 65535"),
            ("-bad.example:1", "neither"),
            ("under_score:1", "neither"),
            (":1", "neither"),
            ("::1:8645", "brackets"),
        ] {
            let e = s.parse::<HostPort>().unwrap_err();
            assert!(e.to_string().contains(why), "{s}: {e}");
        }
        assert!("no-such-host.invalid:1"
            .parse::<HostPort>()
            .unwrap()
            .resolve()
            .is_err());
    }
}
