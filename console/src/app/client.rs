//! The address a request comes from, as the console's rules see it (the password throttle,
//! enrollment, where a classic server's log service is): the connection's peer, or, when that
//! peer is a load balancer named by `serve --trusted-proxy`, the address the balancer put last
//! in `X-Forwarded-For`. A client cannot choose it: a header from anyone but a trusted balancer
//! is ignored, and of a trusted balancer's header only the entry it appended (the last) counts.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address of a request (see the module's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address of a request whose connection came from `peer`, given the balancers
/// the console trusts: `peer` itself unless it is one of them and sent an address.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.iter().any(|t| t.to_canonical() == peer) {
        return peer;
    }
    headers
        .get_all(FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .map_or(peer, |a| a.to_canonical())
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the console does not know this connection's address",
            ))?;
        Ok(ClientAddr(client_addr(
            peer.ip(),
            &parts.headers,
            &state.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::client_addr;
    use axum::http::HeaderMap;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_trusted_balancer_names_the_client_and_only_by_its_own_entry() {
        let lb = [ip("10.0.0.2")];
        // Through the balancer: the address it appended, also after a client's own header.
        assert_eq!(
            client_addr(ip("10.0.0.2"), &forwarded(&["192.0.2.7"]), &lb),
            ip("192.0.2.7")
        );
        assert_eq!(
            client_addr(
                ip("10.0.0.2"),
                &forwarded(&["203.0.113.9, 198.51.100.1", "192.0.2.7"]),
                &lb
            ),
            ip("192.0.2.7")
        );
        assert_eq!(
            client_addr(ip("10.0.0.2"), &forwarded(&["203.0.113.9, 192.0.2.7"]), &lb),
            ip("192.0.2.7")
        );
        // A v4-mapped peer is the same balancer.
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.2"), &forwarded(&["192.0.2.7"]), &lb),
            ip("192.0.2.7")
        );
        // Anyone else's header is ignored: a client cannot pick its address.
        assert_eq!(
            client_addr(ip("192.0.2.50"), &forwarded(&["10.9.9.9"]), &lb),
            ip("192.0.2.50")
        );
        assert_eq!(
            client_addr(ip("192.0.2.50"), &forwarded(&["10.9.9.9"]), &[]),
            ip("192.0.2.50")
        );
        // A trusted balancer that sent no address, or garbage: the balancer itself.
        assert_eq!(
            client_addr(ip("10.0.0.2"), &HeaderMap::new(), &lb),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_addr(ip("10.0.0.2"), &forwarded(&["unknown"]), &lb),
            ip("10.0.0.2")
        );
    }
}
