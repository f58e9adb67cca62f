//! Revisited Oxford / Paris retrieval (Radenović et al. 2018) as DINO's
//! `eval_image_retrieval.py` runs it: features L2-normalised per block and concatenated,
//! optionally PCA'd (fitted on the database rows, centred, no whitening, no re-normalisation),
//! similarity = dot product, database ranked by decreasing similarity, then `compute_map` of the
//! revisited benchmark (DINO's `utils.compute_map`, ported line by line) for the medium and hard
//! protocols, with mP@1/5/10.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

use crate::{
    all_combinations, combination_name, EvalError, GndList, Matrix, Pca, QueryGnd, Result,
    RetrievalProtocol, Subset,
};

/// The precision cut-offs DINO reports: mP@1, mP@5, mP@10.
pub const RETRIEVAL_KS: [usize; 3] = [1, 5, 10];

/// Positives (`ok`) and ignored images (`junk`) of one query, as `compute_map` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApGnd {
    /// Database indices of the positives (their count, duplicates included, is the recall
    /// denominator, as in the reference).
    pub ok: Vec<usize>,
    /// Database indices removed from the ranking before scoring.
    pub junk: Vec<usize>,
}

/// Output of [`compute_map`], as fractions (the reference's `map, aps, pr, prs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapScores {
    /// Mean average precision.
    pub map: f64,
    /// Average precision of every query.
    pub aps: Vec<f64>,
    /// Mean precision at every `k`.
    pub pr: Vec<f64>,
    /// Precision at every `k` of every query (`[query][k]`).
    pub prs: Vec<Vec<f64>>,
}

/// The revisited protocol's scores, in percent (×100, as DINO prints them, unrounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisitedScores {
    /// mAP, medium protocol.
    pub map_medium: f64,
    /// mAP, hard protocol.
    pub map_hard: f64,
    /// The cut-offs of `mp_medium` / `mp_hard` ([`RETRIEVAL_KS`]).
    pub ks: Vec<usize>,
    /// mP@k, medium protocol.
    pub mp_medium: Vec<f64>,
    /// mP@k, hard protocol.
    pub mp_hard: Vec<f64>,
    /// AP of every query, medium protocol.
    pub ap_medium: Vec<f64>,
    /// AP of every query, hard protocol.
    pub ap_hard: Vec<f64>,
}

/// Result of [`retrieval_map`] for one block combination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalResult {
    /// Block names joined by `+`.
    pub combination: String,
    /// Whether PCA was applied.
    pub pca: bool,
    /// The scores.
    #[serde(flatten)]
    pub scores: RevisitedScores,
}

/// One named block of database and query features.
#[derive(Debug, Clone)]
pub struct RetrievalBlock {
    /// Name (`embedding`, `kl`, ...).
    pub name: String,
    /// `[n_database, d]`.
    pub database: Matrix,
    /// `[n_queries, d]`.
    pub queries: Matrix,
}

/// The reference's `compute_ap(ranks, nres)`: `ranks` are the 0-based positions of the
/// positives in the ranking (junk removed), ascending; `nres` the number of positives. The
/// trapezoid rule over the precision-recall curve: for the `j`-th positive at position `r`, the
/// mean of the precision just before it (`j / r`, or 1 at `r = 0`) and at it (`(j+1)/(r+1)`),
/// times the recall step `1/nres`.
pub fn compute_ap(ranks: &[usize], nres: usize) -> f64 {
    let mut ap = 0.0;
    let recall_step = 1.0 / nres as f64;
    for (j, &rank) in ranks.iter().enumerate() {
        let precision_0 = if rank == 0 {
            1.0
        } else {
            j as f64 / rank as f64
        };
        let precision_1 = (j + 1) as f64 / (rank + 1) as f64;
        ap += (precision_0 + precision_1) * recall_step / 2.0;
    }
    ap
}

/// The reference's `compute_map(ranks, gnd, kappas)`, line by line; `ranks[q]` is query `q`'s
/// ranking of database indices (best first; all rankings of one length).
///
/// For each query: the positions of its positives and junk images in its ranking; every
/// positive's position decreased by the number of junk images ranked before it (`pos[ip] - k`);
/// AP by [`compute_ap`] with `nres = ok.len()`; then, positions made 1-based, precision at `k` =
/// `#{pos <= kq} / kq` with `kq = min(max(pos), k)`. Means over the queries.
///
/// Unlike the reference, which skips a query with no positives (NaN AP), such a query is an
/// error, as is a query none of whose positives is ranked (the reference fails on `max(pos)`).
/// Other errors: not one ranking per query, rankings of different lengths, `k = 0`.
pub fn compute_map(ranks: &[Vec<usize>], gnd: &[ApGnd], kappas: &[usize]) -> Result<MapScores> {
    if ranks.len() != gnd.len() {
        return Err(EvalError::RankingCount {
            rankings: ranks.len(),
            queries: gnd.len(),
        });
    }
    if gnd.is_empty() {
        return Err(EvalError::EmptySubset {
            subset: Subset::Queries,
        });
    }
    if kappas.contains(&0) {
        return Err(EvalError::ZeroKappa);
    }
    let len = ranks[0].len();
    let mut map = 0.0;
    let mut aps = vec![0.0; gnd.len()];
    let mut pr = vec![0.0; kappas.len()];
    let mut prs = vec![vec![0.0; kappas.len()]; gnd.len()];
    for (i, (rank, g)) in ranks.iter().zip(gnd).enumerate() {
        if rank.len() != len {
            return Err(EvalError::RankingLength {
                query: i,
                found: rank.len(),
                expected: len,
            });
        }
        if g.ok.is_empty() {
            return Err(EvalError::NoPositives {
                query: i,
                protocol: None,
            });
        }
        let ok: std::collections::HashSet<usize> = g.ok.iter().copied().collect();
        let junk_set: std::collections::HashSet<usize> = g.junk.iter().copied().collect();
        // Sorted positions of positive and junk images (0-based).
        let mut pos: Vec<usize> = (0..len).filter(|&j| ok.contains(&rank[j])).collect();
        let junk: Vec<usize> = (0..len).filter(|&j| junk_set.contains(&rank[j])).collect();
        if pos.is_empty() {
            return Err(EvalError::UnrankedPositives {
                query: i,
                positives: g.ok.len(),
                ranked: len,
            });
        }
        let mut k = 0;
        let mut ij = 0;
        if !junk.is_empty() {
            // Decrease positions of positives by the number of junk images before them.
            let mut ip = 0;
            while ip < pos.len() {
                while ij < junk.len() && pos[ip] > junk[ij] {
                    k += 1;
                    ij += 1;
                }
                pos[ip] -= k;
                ip += 1;
            }
        }
        let ap = compute_ap(&pos, g.ok.len());
        map += ap;
        aps[i] = ap;
        // Precision at k (positions made 1-based).
        pos.iter_mut().for_each(|p| *p += 1);
        let max_pos = pos.iter().copied().max().unwrap_or(1);
        for (j, &kappa) in kappas.iter().enumerate() {
            let kq = max_pos.min(kappa);
            prs[i][j] = pos.iter().filter(|&&p| p <= kq).count() as f64 / kq as f64;
        }
        pr.iter_mut().zip(&prs[i]).for_each(|(a, b)| *a += b);
    }
    let nq = gnd.len() as f64;
    Ok(MapScores {
        map: map / nq,
        aps,
        pr: pr.into_iter().map(|v| v / nq).collect(),
        prs,
    })
}

/// Checks every ground-truth index against the database size and every query's positives
/// under both protocols.
fn check_gnd(gnd: &[QueryGnd], database: usize) -> Result<()> {
    for (query, g) in gnd.iter().enumerate() {
        for list in [GndList::Easy, GndList::Hard, GndList::Junk] {
            if let Some((position, &index)) = g
                .list(list)
                .iter()
                .enumerate()
                .find(|(_, &i)| i >= database)
            {
                return Err(EvalError::GndIndex {
                    query,
                    list,
                    position,
                    index,
                    database,
                });
            }
        }
        if g.easy.is_empty() && g.hard.is_empty() {
            return Err(EvalError::NoPositives {
                query,
                protocol: Some(RetrievalProtocol::Medium),
            });
        }
        if g.hard.is_empty() {
            return Err(EvalError::NoPositives {
                query,
                protocol: Some(RetrievalProtocol::Hard),
            });
        }
    }
    Ok(())
}

/// The revisited protocol on rankings (`ranks[q]` = query `q`'s database indices, best first):
/// [`compute_map`] with medium (`ok = easy + hard`, `junk = junk`) and hard (`ok = hard`,
/// `junk = junk + easy`) positives, `k` in [`RETRIEVAL_KS`], in percent.
///
/// Errors: a query with no positives under either protocol (naming it and the protocol), and
/// those of [`compute_map`]. Ground-truth indices are checked against the ranking length.
pub fn revisited_map(ranks: &[Vec<usize>], gnd: &[QueryGnd]) -> Result<RevisitedScores> {
    if ranks.len() != gnd.len() {
        return Err(EvalError::RankingCount {
            rankings: ranks.len(),
            queries: gnd.len(),
        });
    }
    check_gnd(gnd, ranks.first().map_or(0, Vec::len))?;
    let run = |p: RetrievalProtocol| {
        let g: Vec<ApGnd> = gnd.iter().map(|q| q.protocol(p)).collect();
        compute_map(ranks, &g, &RETRIEVAL_KS)
    };
    let (m, h) = (
        run(RetrievalProtocol::Medium)?,
        run(RetrievalProtocol::Hard)?,
    );
    let pct = |v: Vec<f64>| v.into_iter().map(|x| x * 100.0).collect::<Vec<_>>();
    Ok(RevisitedScores {
        map_medium: m.map * 100.0,
        map_hard: h.map * 100.0,
        ks: RETRIEVAL_KS.to_vec(),
        mp_medium: pct(m.pr),
        mp_hard: pct(h.pr),
        ap_medium: pct(m.aps),
        ap_hard: pct(h.aps),
    })
}

/// Every query's ranking of the database by decreasing dot product (ties → the smaller database
/// index first, a stable sort). The products run through faer.
///
/// Errors: an inconsistent matrix, an empty database, 0 columns, different widths, a
/// non-finite value.
pub fn rank_database(queries: &Matrix, database: &Matrix) -> Result<Vec<Vec<usize>>> {
    queries.check()?;
    database.check()?;
    if database.rows == 0 {
        return Err(EvalError::EmptySubset {
            subset: Subset::Database,
        });
    }
    if database.cols == 0 {
        return Err(EvalError::NoColumns {
            subset: Subset::Database,
        });
    }
    if queries.cols != database.cols {
        return Err(EvalError::RetrievalDims {
            database: database.cols,
            queries: queries.cols,
        });
    }
    for (subset, m) in [(Subset::Queries, queries), (Subset::Database, database)] {
        if let Some((row, col, value)) = m.first_non_finite() {
            return Err(EvalError::NonFiniteValue {
                subset,
                row,
                col,
                value,
            });
        }
    }
    let (nq, nd, d) = (queries.rows, database.rows, database.cols);
    let mut sim = vec![0.0; nq * nd];
    if nq > 0 {
        matmul(
            MatMut::from_row_major_slice_mut(&mut sim, nq, nd),
            Accum::Replace,
            MatRef::from_row_major_slice(&queries.data, nq, d),
            MatRef::from_row_major_slice(&database.data, nd, d).transpose(),
            1.0,
            Par::rayon(0),
        );
    }
    Ok(sim
        .chunks(nd)
        .take(nq)
        .map(|s| {
            let mut idx: Vec<usize> = (0..nd).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            idx
        })
        .collect())
}

/// Validation of [`retrieval_map`]'s blocks.
fn check_blocks(blocks: &[RetrievalBlock], gnd: &[QueryGnd]) -> Result<()> {
    let first = blocks.first().ok_or(EvalError::NoBlocks)?;
    for b in blocks {
        for (subset, m) in [
            (Subset::Database, &b.database),
            (Subset::Queries, &b.queries),
        ] {
            if m.check().is_err() {
                return Err(EvalError::BlockShape {
                    block: b.name.clone(),
                    subset,
                    rows: m.rows,
                    cols: m.cols,
                    len: m.data.len(),
                });
            }
        }
        if b.database.rows != first.database.rows {
            return Err(EvalError::BlockRows {
                block: b.name.clone(),
                subset: Subset::Database,
                rows: b.database.rows,
                first: first.name.clone(),
                expected: first.database.rows,
            });
        }
        if b.queries.rows != gnd.len() {
            return Err(EvalError::GndQueries {
                block: b.name.clone(),
                queries: b.queries.rows,
                gnd: gnd.len(),
            });
        }
        if b.queries.cols != b.database.cols || b.database.cols == 0 {
            return Err(EvalError::BlockWidth {
                block: b.name.clone(),
                subset: Subset::Queries,
                found: b.queries.cols,
                reference: Subset::Database,
                expected: b.database.cols,
            });
        }
        for (subset, m) in [
            (Subset::Database, &b.database),
            (Subset::Queries, &b.queries),
        ] {
            if let Some((row, col, value)) = m.first_non_finite() {
                return Err(EvalError::BlockNonFinite {
                    block: b.name.clone(),
                    subset,
                    row,
                    col,
                    value,
                });
            }
        }
    }
    for (subset, n) in [
        (Subset::Database, first.database.rows),
        (Subset::Queries, gnd.len()),
    ] {
        if n == 0 {
            return Err(EvalError::EmptySubset { subset });
        }
    }
    Ok(())
}

/// The revisited retrieval protocol for every non-empty combination of blocks (same order and
/// names as [`crate::evaluate`]): per-block L2 normalisation, concatenation, PCA to `pca_dim`
/// fitted on the database rows (centred, no whitening, no re-normalisation; skipped unless
/// `pca_dim` is below the database size and the feature size), [`rank_database`], then
/// [`revisited_map`] with `gnd` (one entry per query row).
///
/// Everything is validated before any work: at least one block, consistent matrices, equal
/// database sizes across blocks, one query row per ground-truth entry, equal widths (at least
/// 1), finite values, every ground-truth index inside the database, positives under both
/// protocols for every query, `pca_dim >= 1` when given.
pub fn retrieval_map(
    blocks: &[RetrievalBlock],
    gnd: &[QueryGnd],
    pca_dim: Option<usize>,
) -> Result<Vec<RetrievalResult>> {
    if pca_dim == Some(0) {
        return Err(EvalError::ZeroPcaDim);
    }
    check_blocks(blocks, gnd)?;
    check_gnd(gnd, blocks[0].database.rows)?;
    let normed: Vec<(Matrix, Matrix)> = blocks
        .iter()
        .map(|b| (b.database.l2_normalized(), b.queries.l2_normalized()))
        .collect();
    all_combinations(blocks.len())
        .into_iter()
        .map(|c| {
            let db = Matrix::hcat(&c.iter().map(|&i| &normed[i].0).collect::<Vec<_>>())?;
            let q = Matrix::hcat(&c.iter().map(|&i| &normed[i].1).collect::<Vec<_>>())?;
            let p = pca_dim.filter(|&p| p < db.rows && p < db.cols);
            let (db, q) = match p {
                Some(p) => {
                    let pca = Pca::fit(&db, p)?;
                    (pca.transform(&db)?, pca.transform(&q)?)
                }
                None => (db, q),
            };
            Ok(RetrievalResult {
                combination: combination_name(&c, |i| blocks[i].name.as_str()),
                pca: p.is_some(),
                scores: revisited_map(&rank_database(&q, &db)?, gnd)?,
            })
        })
        .collect()
}
