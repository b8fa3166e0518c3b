//! Images: references, the registry client, layer unpacking and the on-disk image store.
//! `cri::image_*` call into [`Images`]; nothing here knows about gRPC.

pub mod layer;
pub mod pinned;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use store::ImageStore;

/// The image half of skiffd: pulls into, and answers from, one [`ImageStore`].
pub struct Images {
    pub cfg: Arc<Config>,
    pub store: Arc<ImageStore>,
}

impl Images {
    pub fn open(cfg: Arc<Config>) -> Result<Images> {
        let store = Arc::new(ImageStore::open(&cfg.root)?);
        Ok(Images { cfg, store })
    }
}
