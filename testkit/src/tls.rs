//! A throwaway CA and a server certificate for `127.0.0.1`/`localhost`, made with the `openssl`
//! CLI (P-256 keys: fast to generate, accepted by rustls and Redis).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// PEM files of one test TLS set-up.
pub struct CertFiles {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes a CA and a server certificate in `dir`. The certificate is also good for client
/// authentication: TLS cluster nodes present it to each other on the cluster bus. Panics (naming the step) when `openssl` is
/// missing or fails.
pub fn make_certs(dir: &Path) -> CertFiles {
    let files = CertFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    let ca_key = dir.join("ca.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap_or_else(|e| panic!("testkit: write {}: {e}", ext.display()));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        "make the test CA",
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", s(&ca_key), "-out", s(&files.ca), "-days", "2"],
            &["-subj", "/CN=connect-testkit-ca"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        dir,
        "make the server key and CSR",
        &[
            &["req"][..],
            &ec,
            &["-keyout", s(&files.key), "-out", s(&csr)],
            &["-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    openssl(
        dir,
        "sign the server certificate",
        &[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&files.ca),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-out",
            s(&files.cert),
            "-days",
            "2",
            "-extfile",
            s(&ext),
        ],
    );
    files
}

fn s(p: &Path) -> &str {
    p.to_str().expect("testkit: temporary paths are UTF-8")
}

fn openssl(dir: &Path, step: &str, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("testkit: cannot run `openssl` to {step}: {e} (install Debian's openssl)")
        });
    assert!(
        out.status.success(),
        "testkit: `openssl` failed to {step}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
