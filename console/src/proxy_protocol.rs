//! The PROXY protocol header a load balancer in TCP mode sends first on each connection
//! (`serve --proxy-protocol`, HAProxy's `send-proxy-v2`): the client's own address, which the
//! console cannot otherwise learn when the balancer passes TLS through untouched. Only a
//! connection from a `--trusted-proxy` address is read for one, and such a connection must
//! begin with it (otherwise anyone who reaches the balancer could choose their address by
//! sending a header of their own through it); anyone else's bytes are never taken for one.
//! Versions 1 (text) and 2 (binary) are parsed by the `ppp` crate; exactly the header's bytes
//! are read, so the TLS handshake or request that follows is untouched.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// A version 2 header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, its CRLF included.
const V1_MAX: usize = 107;
/// The longest version 2 header read: the addresses of any family, with room for the
/// balancer's TLVs, which are not used.
const V2_MAX: usize = 16 + 1024;

/// Why a trusted balancer's connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "the connection does not begin with a PROXY protocol header; give the balancer's server lines send-proxy-v2 (and check-send-proxy), or drop --proxy-protocol"
    )]
    Missing,
    #[error("the PROXY protocol header is malformed: {0}")]
    Malformed(String),
}

/// Reads the PROXY protocol header at the start of `io`, a connection from the balancer at
/// `peer`, and returns the client's address it names; the balancer's own for a connection it
/// made itself (a health check: v2 `LOCAL`, v1 `UNKNOWN`) or one of another family.
pub async fn read_client<R: AsyncRead + Unpin>(
    io: &mut R,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    // No header is shorter than 15 bytes, so these are all the header's.
    let mut buf = vec![0u8; 12];
    io.read_exact(&mut buf).await?;
    if buf == V2_SIGNATURE {
        buf.resize(16, 0);
        io.read_exact(&mut buf[12..]).await?;
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if 16 + len > V2_MAX {
            return Err(ProxyHeaderError::Malformed(format!(
                "{len} bytes of addresses and TLVs"
            )));
        }
        buf.resize(16 + len, 0);
        io.read_exact(&mut buf[16..]).await?;
        let header = ppp::v2::Header::try_from(buf.as_slice())
            .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        return Ok(match (header.command, header.addresses) {
            (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                SocketAddr::from((a.source_address, a.source_port))
            }
            (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                SocketAddr::from((a.source_address, a.source_port))
            }
            _ => peer,
        });
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    // Version 1: a line; read a byte at a time so nothing after it is taken.
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed(format!(
                "no line end within {V1_MAX} bytes"
            )));
        }
        buf.push(io.read_u8().await?);
    }
    let header = ppp::v1::Header::try_from(buf.as_slice())
        .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        ppp::v1::Addresses::Unknown => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB: &str = "10.0.0.2:40000";

    async fn read(bytes: &[u8]) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let mut io = bytes;
        let got = read_client(&mut io, LB.parse().unwrap()).await;
        (got, io.to_vec())
    }

    fn v2(command: u8, addresses: ppp::v2::Addresses) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(0x20 | command, ppp::v2::Protocol::Stream, addresses)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn the_client_is_the_headers_source_and_what_follows_is_untouched() {
        let from: SocketAddr = "192.0.2.7:51000".parse().unwrap();
        let to: SocketAddr = "10.0.0.11:443".parse().unwrap();
        let mut bytes = v2(1, (from, to).into());
        bytes.extend_from_slice(b"\x16\x03\x01 hello");
        let (got, rest) = read(&bytes).await;
        assert_eq!(got.unwrap(), from);
        assert_eq!(rest, b"\x16\x03\x01 hello");

        let six: SocketAddr = "[2001:db8::7]:51000".parse().unwrap();
        let bytes = v2(1, (six, "[2001:db8::1]:443".parse().unwrap()).into());
        assert_eq!(read(&bytes).await.0.unwrap(), six);

        let (got, rest) =
            read(b"PROXY TCP4 192.0.2.7 10.0.0.11 51000 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(got.unwrap(), from);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_balancers_own_connections_are_its_own() {
        let bytes = v2(0, ppp::v2::Addresses::Unspecified);
        assert_eq!(read(&bytes).await.0.unwrap(), LB.parse().unwrap());
        let (got, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(got.unwrap(), LB.parse().unwrap());
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn a_connection_without_a_good_header_is_refused() {
        assert!(matches!(
            read(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdef")
                .await
                .0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            read(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat())
                .await
                .0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 not-an-address 10.0.0.11 1 2\r\n").await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 192.0.2.7").await.0,
            Err(ProxyHeaderError::Io(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read(&huge).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
    }
}
