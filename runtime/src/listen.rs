//! Listener setup done before the shards start, so that bind errors are reported at start-up and
//! a port of 0 resolves to one real port that every shard shares.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog: connect storms of tens of thousands per second must not overflow it.
pub const BACKLOG: i32 = 4096;

fn bind_one(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s)
}

/// `count` `SO_REUSEPORT` listeners on one address (the kernel spreads connections over them).
/// Returns the bound address (with the real port when `addr` had port 0).
pub fn shared(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<Socket>)> {
    let first = bind_one(addr)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no inet address"))?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(bound)?);
    }
    Ok((bound, all))
}

/// One listener per shard on consecutive ports (`port + shard`), or each on its own ephemeral
/// port when `addr` has port 0. Used for internal links, which must reach one exact shard.
pub fn per_shard(addr: SocketAddr, count: usize) -> io::Result<Vec<(SocketAddr, Socket)>> {
    (0..count)
        .map(|i| {
            let mut a = addr;
            if addr.port() != 0 {
                let port = addr.port().checked_add(i as u16).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "port range overflows 65535")
                })?;
                a.set_port(port);
            }
            let s = bind_one(a)?;
            let bound = s
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no inet address"))?;
            Ok((bound, s))
        })
        .collect()
}
