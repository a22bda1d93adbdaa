//! The worker's programs by hash: compiled once per process from the
//! source that travels with the instance. Deterministic because the hash
//! fixes the content, so a replay on another worker compiles the same
//! program.

use crate::codec::Definition;
use engine::Program;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

fn programs() -> &'static RwLock<HashMap<String, Arc<Program>>> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<Program>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A program already known to this process.
pub fn get(hash: &str) -> Option<Arc<Program>> {
    programs().read().expect("lock").get(hash).cloned()
}

/// Make a compiled program known (the worker's bundle at start-up).
pub fn insert(program: Arc<Program>) {
    programs()
        .write()
        .expect("lock")
        .insert(program.hash.clone(), program);
}

/// The program of a definition: from the cache, else compiled from its
/// source. A source that does not compile to its hash is refused.
pub fn program(def: &Definition) -> Result<Arc<Program>, String> {
    if let Some(p) = get(&def.hash) {
        return Ok(p);
    }
    let p = engine::compile_program(&def.source, &engine::Options::default()).map_err(|e| {
        format!(
            "定义 {} 无法编译 / definition does not compile: {e}",
            def.hash
        )
    })?;
    if p.hash != def.hash {
        return Err(format!(
            "定义内容与哈希不符 / definition content does not match its hash: {} != {}",
            p.hash, def.hash
        ));
    }
    insert(p.clone());
    Ok(p)
}
