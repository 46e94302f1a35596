//! Proofs for `make bench`'s DPoP run: `dpop_proofs <count> <htu> <files>` writes `count` DPoP
//! proofs (RFC 9449) for `POST <htu>`, each with its own `jti`, all of one fresh ES256 key and
//! issued now, one per line, dealt round-robin into the files (one per wrk thread). Made before
//! the run: wrk cannot sign, and a proof is good once only, so each request takes the next line.

use std::io::Write;

use jsonwebtoken::{Algorithm, Header};
use k8s_openapi::jiff::Timestamp;
use kauth::crd::KeyAlgorithm;
use kauth::keys::generate_key;
use kauth::tokens::new_jti;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [count, htu, files @ ..] = args.as_slice() else {
        panic!("usage: dpop_proofs <count> <htu> <file>...")
    };
    assert!(!files.is_empty(), "at least one output file");
    let count: usize = count.parse().expect("a count");
    let key = generate_key(KeyAlgorithm::ES256, Timestamp::now()).expect("key");
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(key.public_jwk().expect("public key"));
    let encoding = key.encoding_key().expect("signing key");
    let mut outs: Vec<_> = files
        .iter()
        .map(|f| std::io::BufWriter::new(std::fs::File::create(f).expect("output file")))
        .collect();
    let iat = Timestamp::now().as_second();
    let files = outs.len();
    for i in 0..count {
        let claims = serde_json::json!({"jti": new_jti(), "htm": "POST", "htu": htu, "iat": iat});
        let proof = jsonwebtoken::encode(&header, &claims, &encoding).expect("sign");
        writeln!(outs[i % files], "{proof}").expect("write");
    }
    for out in &mut outs {
        out.flush().expect("flush");
    }
}
