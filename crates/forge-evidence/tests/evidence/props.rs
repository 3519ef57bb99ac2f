//! Verification never panics, whatever bytes any file holds, signed or not.

use std::sync::OnceLock;

use chrono::Utc;
use forge_evidence::bundle::{Bundle, VerdictSig, seal};
use forge_evidence::keyring::{KeyPurpose, KeySource};
use forge_evidence::verify::{BundleFiles, verify_files};
use proptest::prelude::*;

use crate::common::{Keys, input, meta, with_evidence};

struct Fixture {
    keys: Keys,
    source: KeySource,
    bundle: Bundle,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = Keys::new(KeyPurpose::Verdict);
        let bundle = Bundle::build(input(4, 300), &keys.signer).unwrap();
        Fixture {
            source: keys.source(),
            keys,
            bundle,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_in_any_file_never_panic(which in 0usize..4, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = fixture();
        let mut files = BundleFiles::from(&f.bundle);
        *files.slot(BundleFiles::NAMES[which]).unwrap() = Some(bytes);
        prop_assert!(verify_files(&files, &f.source, Utc::now()).is_err());
    }

    #[test]
    fn random_signed_content_never_panics(which in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // Signed by the real key, so parsing goes past the signature and hash checks.
        let f = fixture();
        let b = &f.bundle;
        let files = match which {
            0 => BundleFiles::from(&seal(&meta(b), b.score.clone(), bytes, b.evidence.clone(), &f.keys.signer).unwrap()),
            1 => BundleFiles::from(&with_evidence(b, bytes, &f.keys.signer)),
            _ => {
                let mut files = BundleFiles::from(b);
                files.verdict_sig = Some(VerdictSig::sign(&bytes, &f.keys.signer));
                files.manifest_json = Some(bytes);
                files
            }
        };
        prop_assert!(verify_files(&files, &f.source, Utc::now()).is_err());
    }

    #[test]
    fn random_zstd_frames_with_a_valid_signature_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        // Valid zstd around random bytes exercises the tar reader rather than the zstd decoder.
        let f = fixture();
        let b = &f.bundle;
        let evidence = zstd::bulk::compress(&bytes, 1).unwrap();
        let sealed = with_evidence(b, evidence, &f.keys.signer);
        prop_assert!(verify_files(&BundleFiles::from(&sealed), &f.source, Utc::now()).is_err());
    }
}
