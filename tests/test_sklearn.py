"""neurons.sklearn: scikit-learn's estimator checks, Pipeline / cross_val_score / GridSearchCV on
iris, labels of any type, 1-D and 2-D regression, partial_fit continuing a run exactly, clone,
seeds.

Every estimator check runs, with no expected failures (scikit-learn 1.9.1: 55 for the classifier,
53 for the regressor, about 1 s in all with the tiny builders below); skipped by scikit-learn
itself when a package is missing: check_classifier_data_not_an_array and
check_regressor_data_not_an_array (pandas), check_array_api_input (array-api-strict and
SCIPY_ARRAY_API=1).
"""
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone                                       # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline                           # noqa: E402
from sklearn.preprocessing import StandardScaler                     # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks   # noqa: E402

import neurons                                                       # noqa: E402
from neurons import datasets                                         # noqa: E402
from neurons.sklearn import Classifier, Regressor                   # noqa: E402


# module-level builders: the estimator checks pickle fitted estimators
def tiny_classifier(n_features, n_outputs):
    return (neurons.Network((n_features,)).dense(8, "relu").dense(n_outputs, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=0.05)).set_objective("cross_entropy"))


def tiny_regressor(n_features, n_outputs):
    return (neurons.Network((n_features,)).dense(8, "relu").dense(n_outputs)
            .set_optimizer(neurons.optimizers.Adam(lr=0.05)).set_objective("mse"))


def dropout_classifier(n_features, n_outputs):
    return (neurons.Network((n_features,)).dense(16, "relu", dropout=0.2).batchnorm().dense(n_outputs, "softmax")
            .set_optimizer(neurons.optimizers.Adam(lr=0.01)).set_objective("cross_entropy"))


def float64_regressor(n_features, n_outputs):
    return (neurons.Network((n_features,), dtype="float64").dense(16, "tanh").dense(n_outputs)
            .set_optimizer(neurons.optimizers.Adam(lr=0.02)).set_objective("mse"))


class Named:
    """A builder with a stable repr, so that the checks' test ids do not hold an address."""

    def __init__(self, build):
        self.build = build

    def __call__(self, n_features, n_outputs):
        return self.build(n_features, n_outputs)

    def __repr__(self):
        return self.build.__name__


@parametrize_with_checks([Classifier(Named(tiny_classifier)), Regressor(Named(tiny_regressor))])
def test_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    return datasets.iris()


def test_pipeline_cross_val_score_on_iris(iris):
    x, y = iris
    pipe = make_pipeline(StandardScaler(), Classifier(tiny_classifier, epochs=30, batch=16))
    scores = cross_val_score(pipe, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert scores.mean() >= 0.9, scores


def test_grid_search_in_a_pipeline(iris):
    x, y = iris
    pipe = make_pipeline(StandardScaler(), Classifier(tiny_classifier, batch=16))
    grid = GridSearchCV(pipe, {"classifier__epochs": [1, 30]}, cv=3).fit(x, y)
    assert grid.best_params_ == {"classifier__epochs": 30}
    assert grid.best_score_ >= 0.9
    assert grid.best_estimator_[-1].n_iter_ == 30


def test_labels_of_any_type(iris):
    x, y = iris
    names = np.array(datasets.IRIS_CLASSES)[y]
    clf = Classifier(tiny_classifier, epochs=30, batch=16).fit(StandardScaler().fit_transform(x), names)
    assert list(clf.classes_) == sorted(datasets.IRIS_CLASSES)
    pred = clf.predict(StandardScaler().fit_transform(x))
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert np.mean(pred == names) >= 0.9
    proba = clf.predict_proba(StandardScaler().fit_transform(x))
    assert proba.shape == (150, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)


def test_a_binary_problem_gets_two_outputs():
    seen = []

    def build(n_features, n_outputs):
        seen.append((n_features, n_outputs))
        return tiny_classifier(n_features, n_outputs)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = np.where(x[:, 0] > 0, "yes", "no")
    clf = Classifier(build, epochs=20, batch=8).fit(x, y)
    assert seen == [(3, 2)]
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.predict_proba(x).shape == (60, 2)
    assert clf.score(x, y) >= 0.9
    assert clf.network_.output_shape == (2,)


def _linear(n, outputs, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    w = rng.normal(size=(4, outputs))
    return x, x @ w


def test_regression_one_target_gives_1d_predictions():
    x, y = _linear(200, 1)
    reg = Regressor(float64_regressor, epochs=40, batch=16).fit(x, y[:, 0])
    pred = reg.predict(x)
    assert pred.shape == (200,) and pred.dtype == np.float64
    assert reg.score(x, y[:, 0]) >= 0.95
    # a column target stays a column
    assert Regressor(float64_regressor, epochs=2).fit(x, y).predict(x).shape == (200, 1)


def test_regression_several_targets():
    x, y = _linear(200, 3, seed=1)
    reg = Regressor(float64_regressor, epochs=40, batch=16).fit(x, y)
    assert reg.n_outputs_ == 3 and reg.network_.output_shape == (3,)
    assert reg.predict(x).shape == (200, 3)
    assert reg.score(x, y) >= 0.95


def _same_params(a, b):
    la, lb = neurons._tree.leaves(a), neurons._tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(p, q) for p, q in zip(la, lb))


def test_partial_fit_continues_the_run_exactly(iris):
    # dropout (masks drawn per epoch and step), batch normalization (running statistics) and
    # Adam (moments and step count) all go on where fit stopped: fit 3 + 2 partial_fit == fit 5
    x, y = iris
    x = StandardScaler().fit_transform(x)
    straight = Classifier(dropout_classifier, epochs=5, batch=16, seed=3).fit(x, y)
    split = Classifier(dropout_classifier, epochs=3, batch=16, seed=3).fit(x, y)
    split.partial_fit(x, y).partial_fit(x, y)
    assert split.n_iter_ == 5
    assert split.loss_curve_ == straight.loss_curve_
    assert _same_params(split.trained_.params, straight.trained_.params)
    assert _same_params(split.trained_.state, straight.trained_.state)
    assert split.trained_.optimizer_state.count == straight.trained_.optimizer_state.count == 5 * 10
    np.testing.assert_array_equal(split.predict_proba(x), straight.predict_proba(x))
    # from nothing: three partial_fit are fit with epochs=3
    fresh = Classifier(dropout_classifier, batch=16, seed=3)
    for _ in range(3):
        fresh.partial_fit(x, y, classes=[0, 1, 2])
    assert _same_params(fresh.trained_.params, split_params_after(x, y, 3))


def split_params_after(x, y, epochs):
    return Classifier(dropout_classifier, epochs=epochs, batch=16, seed=3).fit(x, y).trained_.params


def test_partial_fit_on_new_data_lowers_the_loss():
    reg = Regressor(tiny_regressor, batch=16)
    losses = []
    for seed in range(8):
        x, y = _linear(64, 1, seed=100 + seed)
        y = x @ np.array([1.0, -2.0, 0.5, 0.0])            # one relation, new samples each call
        reg.partial_fit(x, y)
        losses.append(reg.loss_curve_[-1])
    assert reg.n_iter_ == 8
    assert losses[-1] < 0.25 * losses[0], losses


def test_partial_fit_needs_the_classes_first():
    x, y = np.random.default_rng(0).normal(size=(10, 2)), np.array(["a", "b"] * 5)
    clf = Classifier(tiny_classifier)
    with pytest.raises(ValueError, match="classes="):
        clf.partial_fit(x, y)
    clf.partial_fit(x, y, classes=["a", "b", "c"])
    assert list(clf.classes_) == ["a", "b", "c"] and clf.network_.output_shape == (3,)
    with pytest.raises(ValueError, match="not one of the classes"):
        clf.partial_fit(x, np.array(["a", "d"] * 5))
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(x[:, :1], y)


def test_clone_is_unfitted_with_the_same_params(iris):
    x, y = iris
    opt = neurons.optimizers.SGD(lr=0.1)
    clf = Classifier(tiny_classifier, epochs=3, batch=8, optimizer=opt, seed=5, validation_fraction=0.2,
                     patience=2, verbose=0).fit(x, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.get_params()["build"] is tiny_classifier
    assert not hasattr(copy, "trained_") and not hasattr(copy, "classes_")
    assert copy.set_params(epochs=7).epochs == 7 and clf.epochs == 3


def test_same_seed_same_predictions(iris):
    x, y = iris
    a = Classifier(dropout_classifier, epochs=3, seed=1).fit(x, y).predict_proba(x)
    b = Classifier(dropout_classifier, epochs=3, seed=1).fit(x, y).predict_proba(x)
    c = Classifier(dropout_classifier, epochs=3, seed=2).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_optimizer_overrides_the_networks(iris):
    x, y = iris
    frozen = Classifier(tiny_classifier, epochs=2, optimizer=neurons.optimizers.SGD(lr=0.0)).fit(x, y)
    assert frozen.network_.optimizer == neurons.optimizers.SGD(lr=0.0)
    assert _same_params(frozen.trained_.params, tiny_classifier(4, 3).init(0))


def test_validation_fraction_and_early_stopping(iris):
    x, y = iris
    x = StandardScaler().fit_transform(x)
    clf = Classifier(tiny_classifier, epochs=200, batch=16, validation_fraction=0.3, patience=2).fit(x, y)
    h = clf.history_
    assert len(h.val_loss) == clf.n_iter_ and h.stopped_early and clf.n_iter_ < 200
    assert h.best_epoch == int(np.argmin(h.val_loss)) + 1
    with pytest.raises(ValueError, match="validation_fraction"):
        Classifier(tiny_classifier, patience=2).fit(x, y)
    with pytest.raises(ValueError, match="validation_fraction"):
        Classifier(tiny_classifier, validation_fraction=1.5).fit(x, y)


def test_silent_unless_verbose(iris, capsys):
    x, y = iris
    Classifier(tiny_classifier, epochs=2).fit(x, y)
    assert capsys.readouterr() == ("", "")
    Classifier(tiny_classifier, epochs=2, verbose=1).fit(x, y)
    assert "train loss" in capsys.readouterr().out


def test_build_is_checked(iris):
    x, y = iris
    with pytest.raises(ValueError, match=r"build\(4, 3\) made a network with 2 outputs"):
        Classifier(lambda f, o: tiny_classifier(f, 2)).fit(x, y)
    with pytest.raises(ValueError, match=r"input shape \(5,\)"):
        Classifier(lambda f, o: tiny_classifier(5, o)).fit(x, y)
    with pytest.raises(TypeError, match="not a neurons.Network"):
        Classifier(lambda f, o: None).fit(x, y)


def test_float32_network_takes_any_float_input_and_pickles(iris):
    x, y = iris
    xtr, xte, ytr, yte = train_test_split(x.astype(np.float64), y, random_state=0, stratify=y)
    clf = Classifier(tiny_classifier, epochs=5).fit(xtr, ytr)
    assert clf.network_.dtype == "float32"
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(xte), clf.predict_proba(xte))
    np.testing.assert_array_equal(clf.predict(xte.astype(np.float32)), clf.predict(xte))


def test_imported_on_its_own(monkeypatch):
    out = subprocess.run([sys.executable, "-c", "import sys, neurons; "
                          "print('neurons.sklearn' in sys.modules, 'sklearn' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)           # as if scikit-learn were missing
    monkeypatch.delitem(sys.modules, "neurons.sklearn")
    with pytest.raises(ImportError, match=r'pip install "neurons\[sklearn\]"'):
        import neurons.sklearn                                 # noqa: F401
