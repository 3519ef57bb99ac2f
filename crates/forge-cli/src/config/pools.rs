//! `FORGE_POOLS` (`--pools`): how many warm labs each lab host keeps per template.
//!
//! `default` (the default) keeps one lab of each track's default template; `off` keeps none;
//! otherwise a comma-separated list of `TEMPLATE=N`, where `default=N` stands for every track's
//! default template. The front door reads the same setting to know which spawns may take a
//! warm lab.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use forge_catalog::Catalog;
use forge_core::Track;

/// The most warm labs of one template a host keeps.
pub const MAX_POOL_SIZE: u32 = 50;

/// Template → pool size, from the setting's text, against the catalog the platform will load.
pub fn parse(setting: &str, catalog: &Catalog) -> anyhow::Result<BTreeMap<String, u32>> {
    let name = "FORGE_POOLS (--pools)";
    let mut pools = BTreeMap::new();
    let setting = setting.trim();
    if setting.is_empty() || setting.eq_ignore_ascii_case("off") {
        return Ok(pools);
    }
    for item in setting.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (template, size) = match item.split_once('=') {
            Some((t, n)) => {
                let n: u32 = n.trim().parse().with_context(|| {
                    format!("{name} `{item}`: the size must be a whole number of labs")
                })?;
                (t.trim(), n)
            }
            None => (item, 1),
        };
        if size > MAX_POOL_SIZE {
            bail!("{name} `{item}`: at most {MAX_POOL_SIZE} warm labs per template");
        }
        if template == "default" {
            for track in Track::ALL {
                if let Some(e) = catalog.default_for(track) {
                    pools.insert(e.template.metadata.name.clone(), size);
                }
            }
        } else if catalog.get(template).is_some() {
            pools.insert(template.to_owned(), size);
        } else {
            bail!(
                "{name} `{item}`: template `{template}` is not in the catalog (`forge template \
                 list` shows the templates)"
            );
        }
    }
    pools.retain(|_, n| *n > 0);
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_off_and_lists() {
        let c = Catalog::bundled().unwrap();
        let d = parse("default", &c).unwrap();
        assert_eq!(d.len(), 3, "one per track: {d:?}");
        assert!(d.values().all(|n| *n == 1));
        assert!(parse("off", &c).unwrap().is_empty());
        assert!(parse("", &c).unwrap().is_empty());
        let l = parse("default=2, ccna-ospf-lab=1, netplus-dns-lab=0", &c).unwrap();
        assert_eq!(l.get("ccna-ospf-lab"), Some(&1));
        assert!(!l.contains_key("netplus-dns-lab"), "size 0 is no pool");
        assert_eq!(l.values().filter(|n| **n == 2).count(), 3);
    }

    #[test]
    fn errors_name_the_setting_and_the_item() {
        let c = Catalog::bundled().unwrap();
        for (bad, says) in [
            ("nope=1", "not in the catalog"),
            ("ccna-ospf-lab=x", "whole number"),
            ("ccna-ospf-lab=500", "at most"),
        ] {
            let e = format!("{:#}", parse(bad, &c).unwrap_err());
            assert!(e.contains("FORGE_POOLS") && e.contains(says), "{bad}: {e}");
        }
    }
}
