//! fungi-eval reproduces the paper's kNN script on the golden set: every prediction of every block
//! combination (full and 5-shot) and the accuracies in knn.json.

use fungi_eval::{evaluate, ClassificationBlock, KnnSettings, Matrix};
use fungi_tests::*;

type K = TestBackend;

fn blocks(g: &Golden) -> Vec<ClassificationBlock> {
    ["embeddings", "kl", "dino", "simclr"]
        .iter()
        .map(|n| {
            let (s, tr) = g.f64(&format!("train.{n}")).unwrap();
            let (t, te) = g.f64(&format!("test.{n}")).unwrap();
            ClassificationBlock {
                name: n.to_string(),
                train: Matrix::new(s[0], s[1], tr).unwrap(),
                test: Matrix::new(t[0], t[1], te).unwrap(),
            }
        })
        .collect()
}

#[test]
fn knn_reproduces_golden_predictions_and_accuracies() {
    let g = Golden::open("knn.safetensors").unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("knn.json")).unwrap())
            .unwrap();
    let (_, train_labels) = g.i64("train_labels").unwrap();
    let (_, test_labels) = g.i64("test_labels").unwrap();
    let b = blocks(&g);
    for (tag, few) in [("full", None), ("5shot", Some(5))] {
        let s = KnnSettings {
            k: 20,
            pca_dim: Some(32),
            few_shot: few,
        };
        let res = evaluate::<K>(&b, &train_labels, &test_labels, &s, &Default::default()).unwrap();
        assert_eq!(res.len(), 15);
        let (_, idx) = g.i64(&format!("train_indices_{tag}")).unwrap();
        assert_eq!(
            fungi_eval::few_shot_indices(&train_labels, few.unwrap_or(usize::MAX))
                .iter()
                .map(|&i| i as i64)
                .collect::<Vec<_>>(),
            idx
        );
        for r in &res {
            let (_, want) = g
                .i64(&format!("predictions_{tag}.{}", r.combination))
                .unwrap();
            let wrong = r
                .predictions
                .iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                wrong, 0,
                "{tag} {}: {wrong} predictions differ",
                r.combination
            );
            let j = &report["results"][tag]["combinations"][&r.combination];
            assert!(
                (r.accuracy - j["accuracy"].as_f64().unwrap()).abs() < 1e-12,
                "{tag} {} accuracy",
                r.combination
            );
            assert!(
                (r.mean_per_class_accuracy - j["mean_per_class_accuracy"].as_f64().unwrap()).abs()
                    < 1e-12,
                "{tag} {} mpca",
                r.combination
            );
        }
        eprintln!("{tag}: all 15 combinations reproduce the golden predictions; full combination accuracy {:.4}", res.last().unwrap().accuracy);
    }
}

#[test]
fn pca_matches_sklearn_subspace() {
    // Distances after our PCA equal distances after sklearn's (signs of components are free).
    let g = Golden::open("knn.safetensors").unwrap();
    let b = blocks(&g);
    let tr = Matrix::hcat(
        &b.iter()
            .map(|x| x.train.l2_normalized())
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let pca = fungi_eval::Pca::fit(&tr, 32).unwrap();
    let ours = pca.transform(&tr).unwrap();
    let (_, want) = g.f64("train_pca_full").unwrap();
    let d = |m: &[f64], i: usize, j: usize| {
        (0..32)
            .map(|k| (m[i * 32 + k] - m[j * 32 + k]).powi(2))
            .sum::<f64>()
    };
    for (i, j) in [(0, 1), (5, 900), (17, 1199), (300, 301)] {
        assert!(
            (d(&ours.data, i, j) - d(&want, i, j)).abs() < 1e-5,
            "pair ({i}, {j})"
        );
    }
}
