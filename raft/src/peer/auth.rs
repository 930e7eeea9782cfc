//! Peer authentication: both ends prove they hold the cluster secret before
//! any message is exchanged, and every frame afterwards carries a MAC under a
//! key fresh to the connection.
//!
//! Handshake (K is the cluster secret, H is HMAC-SHA256):
//!
//! ```text
//! client -> server  MAGIC | version | Nc | client id
//! server -> client  MAGIC | version | Ns | server id | H(K, "server" | Nc | Ns | ids)
//! client -> server  H(K, "client" | Nc | Ns | ids)
//! session key       H(K, "session" | Nc | Ns)
//! ```
//!
//! Fixed-size fields only: nothing is decoded with bincode until the peer has
//! proven itself. Each later frame is followed by H(session, direction |
//! sequence number | frame), so frames cannot be forged, replayed, reordered
//! or moved from one connection to another. Traffic is not encrypted: the
//! secret protects who may change the cluster, not the privacy of addresses.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"IPKP";
const AUTH_VERSION: u16 = 1;
const NONCE: usize = 32;
pub const TAG: usize = 32;
const MIN_SECRET: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("peer is not an ipkeep node (bad magic)")]
    Magic,
    #[error("peer speaks peer protocol {0}, this node speaks {AUTH_VERSION}")]
    Version(u16),
    #[error("peer does not know the cluster secret")]
    BadProof,
    #[error("peer hung up during the handshake: it gave up waiting, or it has another cluster secret and could not verify this node")]
    HungUp,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The shared secret of a cluster.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    pub fn new(bytes: &[u8]) -> Result<ClusterSecret, String> {
        if bytes.len() < MIN_SECRET {
            return Err(format!(
                "the cluster secret is {} bytes; use at least {MIN_SECRET} (e.g. head -c 32 /dev/urandom | base64)",
                bytes.len()
            ));
        }
        Ok(ClusterSecret(bytes.to_vec()))
    }

    /// Reads the secret from a file (surrounding whitespace is ignored).
    pub fn load(path: &Path) -> Result<ClusterSecret, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let trimmed = String::from_utf8_lossy(&text).trim().as_bytes().to_vec();
        ClusterSecret::new(&trimmed).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn tag(&self, label: &[u8], parts: &[&[u8]]) -> [u8; TAG] {
        tag_with(&self.0, label, parts)
    }
}

fn tag_with(key: &[u8], label: &[u8], parts: &[&[u8]]) -> [u8; TAG] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(label);
    for p in parts {
        mac.update(&(p.len() as u32).to_be_bytes());
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn verify(expected: &[u8; TAG], got: &[u8]) -> bool {
    // Constant-time comparison.
    got.len() == TAG
        && expected
            .iter()
            .zip(got)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    getrandom::getrandom(&mut n).expect("the kernel's random source");
    n
}

/// Per-connection frame authentication.
pub struct Session {
    key: [u8; TAG],
    send_label: &'static [u8],
    recv_label: &'static [u8],
    send_seq: u64,
    recv_seq: u64,
}

impl Session {
    fn new(secret: &ClusterSecret, nc: &[u8], ns: &[u8], client: bool) -> Session {
        let (send_label, recv_label): (&[u8], &[u8]) = if client {
            (b"c2s", b"s2c")
        } else {
            (b"s2c", b"c2s")
        };
        Session {
            key: secret.tag(b"ipkeep session v1", &[nc, ns]),
            send_label,
            recv_label,
            send_seq: 0,
            recv_seq: 0,
        }
    }

    /// The MAC to append to an outgoing frame.
    pub fn seal(&mut self, frame: &[u8]) -> [u8; TAG] {
        let seq = self.send_seq.to_be_bytes();
        self.send_seq += 1;
        tag_with(&self.key, self.send_label, &[&seq, frame])
    }

    /// Checks the MAC of an incoming frame.
    pub fn open(&mut self, frame: &[u8], mac: &[u8]) -> bool {
        let seq = self.recv_seq.to_be_bytes();
        self.recv_seq += 1;
        verify(&tag_with(&self.key, self.recv_label, &[&seq, frame]), mac)
    }
}

fn hello(nonce: &[u8; NONCE], id: u64) -> Vec<u8> {
    let mut m = MAGIC.to_vec();
    m.extend_from_slice(&AUTH_VERSION.to_be_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(&id.to_be_bytes());
    m
}

const HELLO: usize = 4 + 2 + NONCE + 8;

fn parse_hello(buf: &[u8; HELLO]) -> Result<([u8; NONCE], u64), AuthError> {
    if &buf[..4] != MAGIC {
        return Err(AuthError::Magic);
    }
    let version = u16::from_be_bytes([buf[4], buf[5]]);
    if version != AUTH_VERSION {
        return Err(AuthError::Version(version));
    }
    let mut n = [0u8; NONCE];
    n.copy_from_slice(&buf[6..6 + NONCE]);
    let id = u64::from_be_bytes(buf[6 + NONCE..].try_into().expect("8 bytes"));
    Ok((n, id))
}

/// Client side: proves itself to the server and checks the server's proof.
/// Returns the session and the server's node id.
pub async fn client(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    my_id: u64,
) -> Result<(Session, u64), AuthError> {
    let nc = nonce();
    stream.write_all(&hello(&nc, my_id)).await?;
    let mut buf = [0u8; HELLO];
    stream.read_exact(&mut buf).await?;
    let (ns, server_id) = parse_hello(&buf)?;
    let mut proof = [0u8; TAG];
    stream.read_exact(&mut proof).await?;
    let ids = [my_id.to_be_bytes(), server_id.to_be_bytes()].concat();
    if !verify(&secret.tag(b"ipkeep server v1", &[&nc, &ns, &ids]), &proof) {
        return Err(AuthError::BadProof);
    }
    stream
        .write_all(&secret.tag(b"ipkeep client v1", &[&nc, &ns, &ids]))
        .await?;
    Ok((Session::new(secret, &nc, &ns, true), server_id))
}

/// Server side: refuses a client that cannot prove it knows the secret,
/// before reading anything else from it. Returns the session and the
/// client's (claimed, now authenticated) node id.
pub async fn server(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    my_id: u64,
) -> Result<(Session, u64), AuthError> {
    let mut buf = [0u8; HELLO];
    // The magic first, alone: anything that is not an ipkeep node (a port
    // scan, an old client, a forged raw frame) is turned away at once
    // instead of holding a connection until the handshake times out.
    stream.read_exact(&mut buf[..MAGIC.len()]).await?;
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(AuthError::Magic);
    }
    stream.read_exact(&mut buf[MAGIC.len()..]).await?;
    let (nc, client_id) = parse_hello(&buf)?;
    let ns = nonce();
    let ids = [client_id.to_be_bytes(), my_id.to_be_bytes()].concat();
    let mut reply = hello(&ns, my_id);
    reply.extend_from_slice(&secret.tag(b"ipkeep server v1", &[&nc, &ns, &ids]));
    stream.write_all(&reply).await?;
    let mut proof = [0u8; TAG];
    stream
        .read_exact(&mut proof)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                AuthError::HungUp
            }
            _ => AuthError::Io(e),
        })?;
    if !verify(&secret.tag(b"ipkeep client v1", &[&nc, &ns, &ids]), &proof) {
        return Err(AuthError::BadProof);
    }
    Ok((Session::new(secret, &nc, &ns, false), client_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(
        server_secret: &str,
        client_secret: &str,
    ) -> (
        Result<(Session, u64), AuthError>,
        Result<(Session, u64), AuthError>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ss = ClusterSecret::new(server_secret.as_bytes()).unwrap();
        let cs = ClusterSecret::new(client_secret.as_bytes()).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            server(&mut s, &ss, 1).await
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        let client = client(&mut c, &cs, 2).await;
        // A client that failed hangs up, as the real one does.
        drop(c);
        (server.await.unwrap(), client)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways_and_frames_verify() {
        let (s, c) = pair("0123456789abcdef-secret", "0123456789abcdef-secret").await;
        let (mut s, client_id) = s.unwrap();
        let (mut c, server_id) = c.unwrap();
        assert_eq!((client_id, server_id), (2, 1));
        let mac = c.seal(b"frame one");
        assert!(s.open(b"frame one", &mac));
        let mac2 = c.seal(b"frame two");
        assert!(
            !s.open(b"frame one", &mac2),
            "a frame is bound to its sequence number"
        );
        let mac = s.seal(b"reply");
        assert!(!s.open(b"reply", &mac), "a frame is bound to its direction");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_by_both_sides() {
        let (s, c) = pair("0123456789abcdef-secret", "0123456789abcdef-WRONG!").await;
        assert!(matches!(c, Err(AuthError::BadProof)));
        // The client hung up without a proof: the server never authenticated it,
        // and says why.
        assert!(matches!(s, Err(AuthError::HungUp)));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new(b"short").is_err());
    }
}
