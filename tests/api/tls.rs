//! Certificates for tests of TLS: made per test with the openssl command (`.ci/run` installs
//! it if missing).

use std::process::{Command, Stdio};

/// Certificates made for one test with the openssl command: a CA (`ca`), a server's signed by
/// it for 127.0.0.1 (`broker`), a client's signed by it (`client`), and another CA that signed
/// neither (`stranger`). Each as `{name}.pem` with its key in `{name}.key`.
pub(crate) struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    pub(crate) fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let ran = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl (.ci/run installs it)");
            assert!(ran.success(), "openssl {args:?}");
        };
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "stranger"] {
            let (pem, key_file, subject) = (
                format!("{ca}.pem"),
                format!("{ca}.key"),
                format!("/CN=test {ca}"),
            );
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
            args.extend(key);
            args.extend(["-keyout", &key_file, "-out", &pem]);
            openssl(&args);
        }
        // Version 3 certificates with their uses (rustls refuses version 1, which is what
        // `x509 -req` makes without extensions).
        for (who, extensions) in [
            (
                "broker",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{who}.ext")), extensions)
                .expect("write the extension file");
        }
        for (who, subject) in [("broker", "/CN=127.0.0.1"), ("client", "/CN=feature-store")] {
            let (pem, key_file, request) = (
                format!("{who}.pem"),
                format!("{who}.key"),
                format!("{who}.csr"),
            );
            let mut args = vec![
                "req", "-subj", subject, "-keyout", &key_file, "-out", &request,
            ];
            args.extend(key);
            openssl(&args);
            let mut args = vec![
                "x509",
                "-req",
                "-in",
                &request,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
            ];
            let extensions = format!("{who}.ext");
            args.extend(["-extfile", &extensions]);
            openssl(&args);
        }
        Certificates { dir }
    }

    /// `{name}.key` encrypted (AES-256) under `password`, as `{name}-locked.key`; its path.
    pub(crate) fn locked_key(&self, name: &str, password: &str) -> String {
        let locked = format!("{name}-locked.key");
        let ran = Command::new("openssl")
            .args([
                "pkey",
                "-in",
                &format!("{name}.key"),
                "-aes256",
                "-out",
                &locked,
            ])
            .args(["-passout", &format!("pass:{password}")])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (.ci/run installs it)");
        assert!(ran.success(), "openssl pkey -aes256");
        self.path(&locked)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}
