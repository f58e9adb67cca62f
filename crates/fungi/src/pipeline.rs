//! The one extraction pipeline: images from an [`ImageSource`] in batches, decoded in parallel
//! on a thread of their own while the previous batch computes, the next batch's views prepared
//! ahead when [`FungiExtractor::prepare_ahead`](fungi_core::FungiExtractor::prepare_ahead) says
//! so, unreadable images failing the stream or skipped by the [`OnError`] policy, and each
//! batch's feature rows handed to a sink. [`Fungi::extract`], `fungi extract` (chunks) and the
//! Python package all run through [`Fungi::stream`].
//!
//! ```no_run
//! # fn main() -> fungi::core::Result<()> {
//! # use burn::backend::{Autodiff, Flex};
//! # let fungi: fungi::Fungi<Autodiff<Flex>> = unimplemented!();
//! # let dataset = fungi::Dataset::load("train".as_ref(), None, true)?;
//! use fungi::{OnError, Stream};
//! let stream = Stream::all(dataset.len(), 16).on_error(OnError::Skip);
//! fungi.stream(&dataset, stream, |rows| {
//!     println!("{:?}: {} rows, {} skipped", rows.range, rows.indices.len(), rows.skipped.len());
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```

use std::ops::Range;
use std::path::Path;

use fungi_aug::RgbImage;
use fungi_backbone::AutodiffVitOps;
use fungi_core::{Error, PreparedBatch, Result};
use rayon::prelude::*;

use crate::dataset::ImageSource;
use crate::{Fungi, OnError};

/// One batch's result, handed to the sink of [`Fungi::stream`].
#[derive(Debug)]
pub struct Rows {
    /// The source positions the batch covered.
    pub range: Range<usize>,
    /// The global (dataset) index of each row, in order.
    pub indices: Vec<u64>,
    /// `[indices.len(), feature_dim]` features, row-major, each block L2-normalised.
    pub features: Vec<f32>,
    /// Source positions left out under [`OnError::Skip`], with why.
    pub skipped: Vec<(usize, Error)>,
}

/// What [`Fungi::stream`] runs: which positions in which batches, their global indices, the
/// policy for unreadable images and a progress callback.
pub struct Stream<'a> {
    batches: Vec<Range<usize>>,
    global: Option<&'a [u64]>,
    on_error: OnError,
    progress: Option<&'a (dyn Fn(usize) + Sync)>,
}

impl<'a> Stream<'a> {
    /// These batches of source positions, in order (each at most the extractor's batch size
    /// keeps memory bounded; a batch never mixes with another, so results do not depend on
    /// where batches start).
    pub fn new(batches: Vec<Range<usize>>) -> Self {
        Self {
            batches,
            global: None,
            on_error: OnError::Fail,
            progress: None,
        }
    }
    /// Positions `0..len` in batches of `batch_size`.
    pub fn all(len: usize, batch_size: usize) -> Self {
        let bs = batch_size.max(1);
        Self::new((0..len).step_by(bs).map(|s| s..(s + bs).min(len)).collect())
    }
    /// The global (dataset) index of each source position (default: the position itself):
    /// the key of every image's random streams.
    pub fn global_indices(mut self, global: &'a [u64]) -> Self {
        self.global = Some(global);
        self
    }
    /// What to do with an image that cannot be read (default [`OnError::Fail`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }
    /// Called with the number of images of each batch once it is done (read or skipped).
    pub fn progress(mut self, progress: &'a (dyn Fn(usize) + Sync)) -> Self {
        self.progress = Some(progress);
        self
    }
    /// Images in all batches.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|r| r.len()).sum()
    }
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoded batch: `(position, image or why not)` and, when prepared ahead, its host-side
/// preparation.
type Decoded<P> = (
    Range<usize>,
    Vec<(usize, Result<RgbImage>)>,
    Option<Result<P>>,
);

/// Prepares a batch's host-side work ahead, on the decode thread: `(images, global indices)`.
pub(crate) type PrepareFn<'a, P> = &'a (dyn Fn(&[RgbImage], &[u64]) -> Result<P> + Sync);

/// The runner every stream uses: decode ahead (in parallel, one batch waiting at most), the
/// unreadable-image policy, `compute(images, global indices, prepared)` per batch, `sink` per
/// batch. Under [`OnError::Fail`], the images of the failing batch before the unreadable one
/// are computed and handed to the sink first, so that nothing computed is lost.
pub(crate) fn run<S, P>(
    source: &S,
    stream: Stream<'_>,
    prepare: Option<PrepareFn<'_, P>>,
    mut compute: impl FnMut(&[RgbImage], &[u64], Option<Result<P>>) -> Result<Vec<f32>>,
    mut sink: impl FnMut(Rows) -> Result<()>,
) -> Result<()>
where
    S: ImageSource + ?Sized,
    P: Send,
{
    if let Some(g) = stream.global {
        if g.len() != source.len() {
            return Err(Error::Mismatch {
                what: "global indices of a stream".into(),
                expected: format!("one per image ({})", source.len()),
                found: g.len().to_string(),
            });
        }
    }
    if let Some(r) = stream.batches.iter().find(|r| r.end > source.len()) {
        return Err(Error::Mismatch {
            what: "positions of a stream".into(),
            expected: format!("below {} (the images in the source)", source.len()),
            found: format!("{r:?}"),
        });
    }
    let global = |i: usize| stream.global.map_or(i as u64, |g| g[i]);
    let batches = &stream.batches;
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Decoded<P>>(1);
        scope.spawn(move || {
            for r in batches {
                let decoded: Vec<(usize, Result<RgbImage>)> = r
                    .clone()
                    .into_par_iter()
                    .map(|i| {
                        let img = source.image(i).and_then(|img| {
                            fungi_aug::check_not_empty(&img, Path::new(&source.name(i)))?;
                            Ok(img)
                        });
                        (i, img)
                    })
                    .collect();
                let prepared = prepare.and_then(|prepare| {
                    let (imgs, idx): (Vec<RgbImage>, Vec<u64>) = decoded
                        .iter()
                        .filter_map(|(i, r)| r.as_ref().ok().map(|im| (im.clone(), global(*i))))
                        .unzip();
                    (!imgs.is_empty()).then(|| prepare(&imgs, &idx))
                });
                if tx.send((r.clone(), decoded, prepared)).is_err() {
                    break; // the consumer stopped
                }
            }
        });
        for (range, decoded, prepared) in rx {
            let n = range.len();
            let mut imgs = Vec::with_capacity(n);
            let mut indices = Vec::with_capacity(n);
            let mut skipped = Vec::new();
            let mut failure = None;
            for (i, r) in decoded {
                match r {
                    Ok(img) => {
                        imgs.push(img);
                        indices.push(global(i));
                    }
                    Err(e) => match stream.on_error {
                        OnError::Fail => {
                            failure = Some((i, e));
                            break;
                        }
                        OnError::Skip => skipped.push((i, e)),
                    },
                }
            }
            if let Some((i, e)) = failure {
                // What was read before the unreadable image is computed and kept.
                if !imgs.is_empty() {
                    let features = compute(&imgs, &indices, None)?;
                    sink(Rows {
                        range: range.start..i,
                        indices,
                        features,
                        skipped,
                    })?;
                }
                return Err(e);
            }
            let features = if imgs.is_empty() {
                Vec::new()
            } else {
                compute(&imgs, &indices, prepared)?
            };
            sink(Rows {
                range,
                indices,
                features,
                skipped,
            })?;
            if let Some(p) = stream.progress {
                p(n);
            }
        }
        Ok(())
    })
}

impl<B: AutodiffVitOps> Fungi<B> {
    /// Runs `stream` over `source` and hands each batch's rows to `sink`, in order. Batch k+1
    /// is decoded (in parallel) — and its views made, with prepare-ahead — while batch k
    /// computes; at most one decoded batch waits, so memory is bounded by the batch size.
    ///
    /// # Errors
    /// An unreadable image under [`OnError::Fail`] (the source's error, naming the image; the
    /// images of its batch read before it are computed and handed to the sink first), a global
    /// index list of another length, a position past the source, a computing error (e.g.
    /// [`Error::NonFinite`] with the image's global index) or the sink's error: the stream
    /// stops there, and batches already handed to the sink stay handed.
    pub fn stream<S: ImageSource + ?Sized>(
        &self,
        source: &S,
        stream: Stream<'_>,
        sink: impl FnMut(Rows) -> Result<()>,
    ) -> Result<()> {
        let ex = self.extractor();
        let prepare = |imgs: &[RgbImage], idx: &[u64]| ex.prepare(imgs, idx);
        let prepare: Option<PrepareFn<'_, PreparedBatch>> = ex.prepare_ahead().then_some(&prepare);
        run(
            source,
            stream,
            prepare,
            |imgs, idx, prepared| match prepared {
                Some(p) => p.and_then(|p| ex.extract_prepared(p)),
                None => ex.extract(imgs, idx),
            },
            sink,
        )
    }
}
