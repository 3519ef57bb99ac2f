//! Dockerfile images: `images/<dir>/Dockerfile` and its files, built by the engine on the
//! Debian base or another catalog image.
//!
//! The build context is the directory (without `image.toml`, whose description and aliases
//! do not change the image) as a deterministic tar. The image's digest covers that tar and the
//! id of every image it is built `FROM`, so a new base (or a rebuilt parent) makes every image
//! on it stale. The Dockerfile carries everything about the running container: `CMD`,
//! `HEALTHCHECK`, and the labels the runtime reads at launch (`forge.sysctls`, `forge.tmpfs`).

use super::ImageDef;
use super::context::{self, Tree};
use crate::error::RuntimeError;

/// Version of how a Dockerfile image's digest is made; bump it to rebuild them all.
const DIGEST_VERSION: &str = "forge-dockerfile-1";

/// The build context of a Dockerfile image (tar bytes) and the tar's digest.
pub(super) fn build_context(def: &ImageDef) -> Result<(Vec<u8>, String), RuntimeError> {
    let fail = |message: String| RuntimeError::ImageBuild {
        image: def.reference.clone(),
        message,
    };
    let mut tree = Tree::new();
    context::add_dir(&mut tree, "", &def.dir, &["image.toml"])
        .map_err(|e| fail(format!("reading {}: {e}", def.dir.display())))?;
    context::tar(&tree).map_err(fail)
}

/// The image's digest: its context's digest and the ids of the images it is built on
/// (`(reference, id)` in `FROM` order).
pub(super) fn digest(context_digest: &str, parents: &[(String, String)]) -> String {
    let mut parts = vec![DIGEST_VERSION, context_digest];
    for (reference, id) in parents {
        parts.push(reference);
        parts.push(id);
    }
    context::digest_of(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_parent_changes_the_digest() {
        let one = digest(
            "abc",
            &[("forge/debian:bookworm".into(), "sha256:1".into())],
        );
        let two = digest(
            "abc",
            &[("forge/debian:bookworm".into(), "sha256:2".into())],
        );
        assert_ne!(one, two);
        assert_eq!(
            one,
            digest(
                "abc",
                &[("forge/debian:bookworm".into(), "sha256:1".into())]
            )
        );
    }
}
