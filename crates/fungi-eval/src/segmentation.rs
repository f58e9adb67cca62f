//! The pieces of the HummingBird in-context segmentation evaluation
//! (`../shared/docs/dense-fungi.md` §C) on in-memory features: soft patch labels from a class-id
//! mask ([`patch_labels`]), label transfer from a memory bank of patches by the `k` nearest ones
//! with a softmax of `cos / τ` ([`label_transfer`]), bilinear upsampling of patch scores to
//! pixels with an arg-max ([`upsample_argmax`]), and mIoU over the classes ([`Confusion`]).
//!
//! Differences from the paper's `eval_metrics.py`: no Hungarian matching (the predictions are
//! class ids already), and [`Miou::miou`] averages over the classes present in the ground truth
//! or the predictions; the paper's mean over all classes (absent ones counting 0) is
//! [`Miou::miou_all_classes`].

use burn::prelude::*;

use crate::{knn_neighbors, EvalError, Matrix, Result, Subset};

/// Mask value of pixels that are ignored (Pascal VOC's object boundaries).
pub const IGNORE: u8 = 255;

fn check_mask(mask: &[u8], height: usize, width: usize, num_classes: usize) -> Result<()> {
    if height.checked_mul(width) != Some(mask.len()) {
        return Err(EvalError::MaskSize {
            height,
            width,
            found: mask.len(),
        });
    }
    if let Some(&id) = mask
        .iter()
        .find(|&&v| v != IGNORE && v as usize >= num_classes)
    {
        return Err(EvalError::ClassId { id, num_classes });
    }
    Ok(())
}

/// Soft labels of the `⌊height/patch⌋ × ⌊width/patch⌋` patches of a class-id mask (row-major,
/// `[P, num_classes]`): the fraction of each patch's pixels of each class ([`IGNORE`]d pixels
/// count for no class, so such a row sums to less than 1).
///
/// # Errors
/// [`EvalError::MaskSize`] when `mask` is not `height × width`, [`EvalError::ClassId`] for a
/// value past the classes, [`EvalError::ZeroColumns`] for no class or a patch of size 0.
pub fn patch_labels(
    mask: &[u8],
    height: usize,
    width: usize,
    patch: usize,
    num_classes: usize,
) -> Result<Matrix> {
    check_mask(mask, height, width, num_classes)?;
    if num_classes == 0 || patch == 0 {
        return Err(EvalError::ZeroColumns);
    }
    let (gh, gw) = (height / patch, width / patch);
    let mut out = vec![0f64; gh * gw * num_classes];
    let share = 1.0 / (patch * patch) as f64;
    for y in 0..gh * patch {
        for x in 0..gw * patch {
            let v = mask[y * width + x];
            if v != IGNORE {
                out[((y / patch) * gw + x / patch) * num_classes + v as usize] += share;
            }
        }
    }
    Matrix::new(gh * gw, num_classes, out)
}

fn normalized(m: &Matrix) -> Matrix {
    let mut out = m.clone();
    for row in out.data.chunks_mut(m.cols.max(1)) {
        let n = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    out
}

/// HummingBird's label transfer: each query patch takes the `k` memory patches of highest cosine
/// similarity (exact search on backend `B`), weights them by `softmax(cos / temperature)` and
/// returns the weighted sum of their labels, `[Q, C]`.
///
/// # Errors
/// [`EvalError::BadTemperature`], [`EvalError::LabelRows`] when `memory_labels` has another
/// row count than `memory`, and those of [`knn_neighbors`] (`k = 0`, empty memory, widths).
pub fn label_transfer<B: Backend>(
    memory: &Matrix,
    memory_labels: &Matrix,
    queries: &Matrix,
    k: usize,
    temperature: f64,
    device: &B::Device,
) -> Result<Matrix> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(EvalError::BadTemperature { value: temperature });
    }
    memory_labels.check()?;
    if memory_labels.rows != memory.rows {
        return Err(EvalError::LabelRows {
            subset: Subset::Train,
            rows: memory.rows,
            labels: memory_labels.rows,
        });
    }
    let (mem, q) = (normalized(memory), normalized(queries));
    // On unit rows the Euclidean order is the cosine order.
    let nbrs = knn_neighbors::<B>(&mem, &q, k, device)?;
    let c = memory_labels.cols;
    let mut out = vec![0f64; q.rows * c];
    for (i, list) in nbrs.iter().enumerate() {
        let cos: Vec<f64> = list
            .iter()
            .map(|&j| {
                q.row(i)
                    .iter()
                    .zip(mem.row(j))
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    / temperature
            })
            .collect();
        let top = cos.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = cos.iter().map(|v| (v - top).exp()).collect();
        let z: f64 = w.iter().sum();
        for (&j, wj) in list.iter().zip(&w) {
            for (o, l) in out[i * c..(i + 1) * c].iter_mut().zip(memory_labels.row(j)) {
                *o += wj / z * l;
            }
        }
    }
    Matrix::new(q.rows, c, out)
}

/// Patch scores `[gh·gw, C]` (row-major grid) upsampled to `height × width` pixels by bilinear
/// interpolation (PyTorch's `interpolate(mode="bilinear", align_corners=False)`) and reduced to
/// the class of highest score per pixel (the first on ties).
///
/// # Errors
/// [`EvalError::MatrixSize`] when `scores` does not have `gh·gw` rows.
pub fn upsample_argmax(
    scores: &Matrix,
    gh: usize,
    gw: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>> {
    scores.check()?;
    if scores.rows != gh * gw || gh == 0 || gw == 0 || scores.cols == 0 {
        return Err(EvalError::MatrixSize {
            rows: gh * gw,
            cols: scores.cols,
            len: scores.data.len(),
        });
    }
    // Source index and weight of PyTorch's `area_pixel_compute_source_index` (align_corners =
    // false): src = (dst + 0.5) · in/out − 0.5, clamped at 0.
    let axis = |out: usize, inp: usize| -> Vec<(usize, usize, f64)> {
        (0..out)
            .map(|d| {
                let s = ((d as f64 + 0.5) * inp as f64 / out as f64 - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f64)
            })
            .collect()
    };
    let (ys, xs) = (axis(height, gh), axis(width, gw));
    let c = scores.cols;
    let mut out = Vec::with_capacity(height * width);
    for &(y0, y1, ly) in &ys {
        for &(x0, x1, lx) in &xs {
            let mut best = (f64::NEG_INFINITY, 0usize);
            for k in 0..c {
                let at = |y: usize, x: usize| scores.data[(y * gw + x) * c + k];
                let v = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                    + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
                if v > best.0 {
                    best = (v, k);
                }
            }
            out.push(best.1.min(u8::MAX as usize) as u8);
        }
    }
    Ok(out)
}

/// Per-class pixel counts over a set of (prediction, ground truth) masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    num_classes: usize,
    tp: Vec<u64>,
    fp: Vec<u64>,
    fn_: Vec<u64>,
}

/// mIoU of a [`Confusion`].
#[derive(Debug, Clone, PartialEq)]
pub struct Miou {
    /// IoU `tp / (tp + fp + fn)` per class; `None` for a class in neither the ground truth nor
    /// the predictions.
    pub per_class: Vec<Option<f64>>,
    /// Mean over the classes that are not `None`.
    pub miou: f64,
    /// Mean over all classes, absent ones counting 0 (the paper's `eval_metrics.py`).
    pub miou_all_classes: f64,
}

impl Confusion {
    /// Empty counts for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            tp: vec![0; num_classes],
            fp: vec![0; num_classes],
            fn_: vec![0; num_classes],
        }
    }

    /// Adds one image: `prediction` and `truth` of `height × width` pixels; truth pixels equal
    /// to [`IGNORE`] are left out.
    ///
    /// # Errors
    /// [`EvalError::MaskSize`] for a mask of another size, [`EvalError::ClassId`] for a value
    /// past the classes (a prediction may not be [`IGNORE`]).
    pub fn add(
        &mut self,
        prediction: &[u8],
        truth: &[u8],
        height: usize,
        width: usize,
    ) -> Result<()> {
        check_mask(truth, height, width, self.num_classes)?;
        check_mask(prediction, height, width, self.num_classes)?;
        if let Some(&id) = prediction.iter().find(|&&v| v == IGNORE) {
            return Err(EvalError::ClassId {
                id,
                num_classes: self.num_classes,
            });
        }
        for (&p, &t) in prediction.iter().zip(truth) {
            if t == IGNORE {
                continue;
            }
            if p == t {
                self.tp[t as usize] += 1;
            } else {
                self.fp[p as usize] += 1;
                self.fn_[t as usize] += 1;
            }
        }
        Ok(())
    }

    /// The IoU of every class and their means.
    pub fn miou(&self) -> Miou {
        let per_class: Vec<Option<f64>> = (0..self.num_classes)
            .map(|k| {
                let d = self.tp[k] + self.fp[k] + self.fn_[k];
                (d > 0).then(|| self.tp[k] as f64 / d as f64)
            })
            .collect();
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        let mean = |s: f64, n: usize| if n == 0 { 0.0 } else { s / n as f64 };
        Miou {
            miou: mean(present.iter().sum(), present.len()),
            miou_all_classes: mean(present.iter().sum(), self.num_classes),
            per_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Flex;

    #[test]
    fn miou_of_a_hand_computed_case() {
        // 2 x 3 pixels, 3 classes (class 2 absent everywhere), one ignored pixel.
        let truth = [0, 0, 1, 1, 1, IGNORE];
        let pred = [0, 1, 1, 1, 0, 0];
        let mut c = Confusion::new(3);
        c.add(&pred, &truth, 2, 3).unwrap();
        // class 0: tp 1 (px 0), fp 1 (px 4), fn 1 (px 1) -> 1/3; class 1: tp 2, fp 1, fn 1 -> 2/4.
        let m = c.miou();
        assert_eq!(m.per_class, vec![Some(1.0 / 3.0), Some(0.5), None]);
        assert!((m.miou - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert!((m.miou_all_classes - (1.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        // Bad inputs are errors naming what is wrong.
        let e = c.add(&pred, &truth[..5], 2, 3).unwrap_err();
        assert!(e.to_string().contains("its image's size"), "{e}");
        let e = c.add(&[0, 0, 0, 0, 0, 7], &truth, 2, 3).unwrap_err();
        assert_eq!(
            e,
            EvalError::ClassId {
                id: 7,
                num_classes: 3
            }
        );
    }

    #[test]
    fn patch_labels_are_pixel_fractions() {
        // 4 x 4 mask, patches of 2: [[0,0,1,1],[0,1,1,1],[2,2,255,255],[2,2,255,0]].
        let mask = [
            0, 0, 1, 1, 0, 1, 1, 1, 2, 2, IGNORE, IGNORE, 2, 2, IGNORE, 0,
        ];
        let l = patch_labels(&mask, 4, 4, 2, 3).unwrap();
        assert_eq!(
            l.data,
            vec![0.75, 0.25, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.25, 0.0, 0.0]
        );
        assert!(patch_labels(&mask, 4, 4, 2, 2).is_err());
    }

    #[test]
    fn upsampling_matches_pytorch_bilinear_and_transfer_is_a_softmax() {
        // 1 x 2 grid, 2 classes: class scores (0, 1) then (1, 0); 1 x 4 pixels. PyTorch's
        // source x for output 0..4 with scale 0.5: 0 (clamped), 0.25, 0.75, 1 (clamped).
        let s = Matrix::new(2, 2, vec![0.0, 1.0, 1.0, 0.0]).unwrap();
        assert_eq!(upsample_argmax(&s, 1, 2, 1, 4).unwrap(), vec![1, 1, 0, 0]);
        // Label transfer: two memory patches, k = 2, temperature 0.5.
        let mem = Matrix::new(2, 2, vec![1.0, 0.0, 0.0, 2.0]).unwrap();
        let labels = Matrix::new(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let q = Matrix::new(1, 2, vec![3.0, 4.0]).unwrap(); // unit: (0.6, 0.8)
        let got = label_transfer::<B>(&mem, &labels, &q, 2, 0.5, &Default::default()).unwrap();
        let (a, b) = ((0.6f64 / 0.5).exp(), (0.8f64 / 0.5).exp());
        assert!((got.data[0] - a / (a + b)).abs() < 1e-12);
        assert!((got.data[1] - b / (a + b)).abs() < 1e-12);
        let e = label_transfer::<B>(&mem, &labels, &q, 2, 0.0, &Default::default());
        assert!(matches!(e, Err(EvalError::BadTemperature { .. })));
    }
}
