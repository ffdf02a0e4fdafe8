//! TLS (rustls over glommio) against a real `redis-server --tls-port` with a throwaway CA and a
//! password (testkit).

use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use resp_client::slot::key_slot;
use resp_client::{Batch, Client, Config, Error, TlsConfig};
use testkit::{redis_cmd, RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(5);

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn glommio executor")
        .join()
        .expect("executor thread");
}

#[test]
fn tls_with_password_large_values_and_pipelines() {
    let redis = RedisServer::start_tls(Some("tls-s3cret"));
    let url = redis.tls_url().unwrap();
    run(move || async move {
        let client = Client::new(Config::from_url(&url).unwrap());
        client
            .wait_connected(WAIT)
            .await
            .expect("TLS + AUTH handshake");
        assert!(client.cmd(&[b"SET", b"k", b"v"]).await.unwrap().is_ok());
        let got = client.cmd(&[b"GET", b"k"]).await.unwrap();
        assert_eq!(got.as_bytes().map(|b| &b[..]), Some(&b"v"[..]));
        // Larger than many TLS records each way.
        let big = vec![b'x'; 300_000];
        assert!(client.cmd(&[b"SET", b"big", &big]).await.unwrap().is_ok());
        let got = client.cmd(&[b"GET", b"big"]).await.unwrap();
        assert_eq!(got.as_bytes().map(|b| b.len()), Some(big.len()));
        // A deep pipeline from one call and many small ones at once.
        let mut batch = Batch::new();
        for i in 0..2000 {
            batch.push(&[b"INCR", format!("n{}", i % 7).as_bytes()]);
        }
        assert_eq!(client.submit_batch(batch).await.unwrap().len(), 2000);
        let pending: Vec<_> = (0..2000).map(|_| client.submit(&[b"PING"])).collect();
        for p in pending {
            assert!(p.await.is_ok());
        }
        assert!(client.stats().latency_us > 0);
    });
}

#[test]
fn tls_failures_are_clear() {
    let redis = RedisServer::start_tls(Some("pw"));
    let port = redis.tls_port().unwrap();
    let ca = redis.ca_file().unwrap().to_path_buf();
    let plain = redis.url();
    run(move || async move {
        let quick = |c: Config| {
            c.with_connect_timeout(Duration::from_millis(500))
                .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        };
        // Wrong password: the handshake is rejected.
        let c = Client::new(quick(
            Config::from_url(&format!(
                "rediss://:nope@127.0.0.1:{port}?ca={}",
                ca.display()
            ))
            .unwrap(),
        ));
        assert_eq!(
            c.wait_connected(Duration::from_millis(700)).await,
            Err(Error::Disconnected)
        );
        assert!(c.stats().connect_errors >= 1);
        // No CA given: the built-in public roots do not trust the throwaway CA.
        let c = Client::new(quick(
            Config::from_url(&format!("rediss://:pw@127.0.0.1:{port}")).unwrap(),
        ));
        assert_eq!(
            c.wait_connected(Duration::from_millis(700)).await,
            Err(Error::Disconnected)
        );
        // The certificate is for 127.0.0.1 and localhost, not for another name.
        let c = Client::new(quick(
            Config::from_url(&format!(
                "rediss://:pw@127.0.0.1:{port}?ca={}&sni=redis.example.com",
                ca.display()
            ))
            .unwrap(),
        ));
        assert_eq!(
            c.wait_connected(Duration::from_millis(700)).await,
            Err(Error::Disconnected)
        );
        // By name, via the config struct.
        let c = Client::new(
            Config::default()
                .with_addr(format!("localhost:{port}"))
                .with_auth(None, Some("pw".into()))
                .with_tls(Some(TlsConfig::default().with_ca_file(&ca))),
        );
        c.wait_connected(WAIT)
            .await
            .expect("localhost is in the certificate");
        // Plain RESP to the plain port with the password works as before.
        let c = Client::new(Config::from_url(&plain).unwrap());
        c.wait_connected(WAIT).await.unwrap();
        // A CA file that is not one is a configuration error, reported by validate().
        let bad =
            Config::default().with_tls(Some(TlsConfig::default().with_ca_file("/nonexistent.pem")));
        assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
    });
}

#[test]
fn tls_server_restart_recovers() {
    let mut redis = RedisServer::start_tls(None);
    let url = redis.tls_url().unwrap();
    run(move || async move {
        let config = Config::from_url(&url)
            .unwrap()
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100));
        let client = Client::new(config);
        client.wait_connected(WAIT).await.unwrap();
        assert!(client.cmd(&[b"SET", b"a", b"1"]).await.unwrap().is_ok());
        redis.stop();
        let err = client.cmd(&[b"GET", b"a"]).await.unwrap_err();
        assert!(err.is_connection_fatal() || err.is_retryable(), "{err:?}");
        redis.restart();
        client
            .wait_connected(WAIT)
            .await
            .expect("reconnects over TLS");
        assert!(client.cmd(&[b"GET", b"a"]).await.unwrap().is_nil());
        assert!(client.stats().reconnects >= 1);
    });
}

/// `rediss-cluster://` (ElastiCache cluster mode with in-transit encryption): the slot map read
/// over TLS names the nodes' TLS ports, every node connection verifies the certificate, and a
/// `MOVED` over TLS names the new owner's TLS port.
#[test]
fn tls_cluster_routes_pipelines_and_follows_moved() {
    let cluster = Arc::new(RedisCluster::start_tls());
    let url = cluster.tls_seed_url().unwrap();
    let c = cluster.clone();
    run(move || async move {
        let client = Client::new(Config::from_url(&url).unwrap());
        client
            .wait_connected(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(client.stats().nodes, 3);
        let keys: Vec<String> = (0..200).map(|i| format!("tls:{i}")).collect();
        let mut batch = Batch::new();
        for k in &keys {
            batch.push(&[b"SET", k.as_bytes(), k.as_bytes()]);
        }
        assert!(client
            .submit_batch(batch)
            .await
            .unwrap()
            .iter()
            .all(|r| r.is_ok()));
        for k in keys.iter().step_by(17) {
            let owner = c.master_of_slot(key_slot(k.as_bytes()));
            assert_eq!(
                redis_cmd(&owner, &["GET", k]),
                format!("${}\r\n{k}\r\n", k.len())
            );
            let got = client.cmd(&[b"GET", k.as_bytes()]).await.unwrap();
            assert_eq!(got.as_bytes().map(|b| &b[..]), Some(k.as_bytes()));
        }
        // Move a slot: the client follows the MOVED (a TLS port) and keeps working.
        let slot = key_slot(keys[0].as_bytes());
        let from = c.master_of_slot(slot);
        let to = c
            .masters()
            .into_iter()
            .find(|m| m.addr != from)
            .unwrap()
            .addr;
        c.move_slot(slot, &to);
        let before = client.stats().redirects;
        let got = client.cmd(&[b"GET", keys[0].as_bytes()]).await.unwrap();
        assert_eq!(got.as_bytes().map(|b| &b[..]), Some(keys[0].as_bytes()));
        assert!(client.stats().redirects > before);
        assert!(client.stats().connected);
    });
}
