"""Iris in scikit-learn: a grid search over a neurons classifier in a pipeline.

    python examples/sklearn_iris.py [--seed 0]

StandardScaler then ``neurons.sklearn.Classifier`` in a ``Pipeline``; ``GridSearchCV`` (5-fold)
picks the epochs and the learning rate on a stratified 80 % of the flowers (labels are the species'
names), and the best pipeline, refitted on that 80 %, is scored on the other 20 %. Needs
scikit-learn (``pip install "neurons[sklearn]"``).
"""
import argparse

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import neurons
import neurons.sklearn
from neurons import datasets


def build(n_features, n_outputs):
    """The network the classifier trains: 4 -> 16 relu -> 3 softmax (Adam, unless the grid's)."""
    return (neurons.Network((n_features,))
            .dense(16, "relu")
            .dense(n_outputs, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=0.01))
            .set_objective("cross_entropy"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = datasets.iris()
    species = np.array(datasets.IRIS_CLASSES)[y]          # string labels: the estimator maps them
    x, x_test, y, y_test = train_test_split(x, species, test_size=0.2, stratify=species, random_state=args.seed)

    pipe = make_pipeline(StandardScaler(), neurons.sklearn.Classifier(build, batch=16, seed=args.seed))
    grid = {"classifier__epochs": [10, 50],
            "classifier__optimizer": [neurons.optimizers.Adam(lr=lr) for lr in (0.001, 0.01)]}
    search = GridSearchCV(pipe, grid, cv=StratifiedKFold(5, shuffle=True, random_state=args.seed)).fit(x, y)

    for params, mean, std in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"],
                                 search.cv_results_["std_test_score"]):
        print(f"epochs {params['classifier__epochs']:>3}, {params['classifier__optimizer'].describe():<60} "
              f"cv accuracy {100 * mean:5.1f}% (± {100 * std:.1f})")
    best = search.best_params_
    print(f"best: epochs {best['classifier__epochs']}, {best['classifier__optimizer'].describe()} "
          f"(cv accuracy {100 * search.best_score_:.1f}%)")
    acc = search.score(x_test, y_test)
    print(f"test accuracy {100 * acc:.1f}% on {len(x_test)} flowers; classes {', '.join(search.classes_)}")
    return acc


if __name__ == "__main__":
    main()
