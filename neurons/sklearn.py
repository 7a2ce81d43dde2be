"""scikit-learn estimators around a ``Network``: ``Classifier`` and ``Regressor``.

Imported on its own (``import neurons.sklearn``; ``import neurons`` does not load it); it needs
scikit-learn (``pip install "neurons[sklearn]"``, tested with 1.9).

>>> import neurons, neurons.sklearn
>>> def build(n_features, n_outputs):
...     return (neurons.Network((n_features,)).dense(16, "relu").dense(n_outputs, "softmax")
...             .set_optimizer(neurons.optimizers.Adam(lr=0.01)).set_objective("cross_entropy"))
>>> clf = neurons.sklearn.Classifier(build, epochs=50).fit(x, labels)       # doctest: +SKIP
>>> clf.predict(x_new), clf.predict_proba(x_new), clf.score(x_test, labels_test)   # doctest: +SKIP

``build(n_features, n_outputs) -> Network`` makes the network at each ``fit`` (input shape
``(n_features,)``, ``n_outputs`` outputs: the number of classes, 2 for a binary problem, or the
number of regression targets) with its own objective and optimizer; ``optimizer=`` replaces the
latter. ``build`` should be a module-level function (or another picklable callable) for the
fitted estimator to pickle, and ``GridSearchCV`` with ``n_jobs`` to copy it.

Every ``__init__`` argument is stored as given, so ``get_params``, ``set_params``, ``clone``,
``Pipeline``, ``cross_val_score`` and ``GridSearchCV`` work as with scikit-learn's own
estimators. A fitted estimator holds ``network_`` (the ``Network`` built), ``trained_`` (the
``Trained`` result: params, running statistics, optimizer state), ``history_``, ``loss_curve_``,
``n_iter_`` (epochs run), ``n_features_in_`` and, for the classifier, ``classes_``.

``partial_fit`` trains one more epoch on the data it is given, continuing the params, the
running statistics and the optimizer's state (Adam's moments and step count, so schedules go
on): on the same data, ``fit`` with ``epochs=k`` then ``m`` calls of ``partial_fit`` gives the
params of ``fit`` with ``epochs=k + m``, bit for bit, when ``fit`` ran without
``validation_fraction``.

Predictions and probabilities are float64 whatever the network's dtype (scikit-learn's
convention); inputs are converted to the network's dtype.

Both pass every check of ``sklearn.utils.estimator_checks`` (scikit-learn 1.9.1, with no
expected failures; the pandas checks and the array-API one run only when pandas and
array-api-strict are installed, and are skipped otherwise). None concern sample weights: ``fit``
takes none.

``learn`` goes on from given params and running statistics (``params=``, ``state=``) but takes
no optimizer state and always counts its epochs from 0; ``partial_fit`` gets the rest with the
public pieces: an optimizer (any object with ``init`` and ``update``) whose ``init`` returns the
state the last run ended with, its own shuffle of the data for that epoch (``shuffle=False`` to
``learn``), and the seed whose epoch-0 dropout masks are that epoch's. After a ``fit`` with
``validation_fraction`` it goes on from the best epoch's params with the last step's optimizer
state, and adds no validation epochs to ``history_`` (its validation lists cover ``fit``'s).
"""
import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as e:                               # pragma: no cover
    raise ImportError('neurons.sklearn needs scikit-learn: pip install "neurons[sklearn]"') from e
try:
    from sklearn.utils.validation import validate_data
except ImportError:                                    # pragma: no cover: scikit-learn < 1.6
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

from . import _checks
from .network import Network
from .training import Trained

__all__ = ["Classifier", "Regressor"]

_FLOATS = (np.float64, np.float32)


class _Continued:
    """The network's optimizer, started from a given state instead of a fresh one.

    ``learn`` takes ``params=`` and ``state=`` (running statistics) to go on from, but not the
    optimizer's state; an optimizer is any object with ``init`` and ``update``, so this one's
    ``init`` hands back the state the last run ended with and ``update`` is the optimizer's own.
    """

    def __init__(self, optimizer, state):
        self.optimizer, self.state = optimizer, state

    def init(self, params):
        return self.state

    def update(self, grads, state, params):
        return self.optimizer.update(grads, state, params)


def _step_seed_for(seed, epoch):
    """The seed that makes epoch 0 of ``learn`` draw the dropout masks epoch ``epoch`` of a run
    seeded ``seed`` draws (``training._step_seed``: ``seed·1000003 + epoch·10007 + step`` mod
    2^63; 1000003 is odd, so it has an inverse mod 2^63)."""
    mod = 1 << 63
    return (seed + epoch * 10007 * pow(1000003, -1, mod)) % mod


class _Estimator(BaseEstimator):
    """What the classifier and the regressor share: building, training, predicting."""

    def __init__(self, build, epochs=10, batch=32, optimizer=None, seed=0, validation_fraction=None,
                 patience=None, shuffle=True, verbose=0):
        self.build = build
        self.epochs = epochs
        self.batch = batch
        self.optimizer = optimizer
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.shuffle = shuffle
        self.verbose = verbose

    # ------------------------------------------------------------------ subclasses

    def _targets(self, y, fitting, classes=None):
        """``(targets for learn, n_outputs)``; ``fitting``: learn the encoding (the classes: those
        of ``y``, or ``classes`` when given; the target's shape)."""
        raise NotImplementedError

    def _validate(self, X, y, reset):
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def _network(self, n_features, n_outputs):
        if not callable(self.build):
            raise TypeError(f"build must be a function build(n_features, n_outputs) -> neurons.Network, "
                            f"not {self.build!r}")
        net = self.build(n_features, n_outputs)
        if not isinstance(net, Network):
            raise TypeError(f"build({n_features}, {n_outputs}) returned {type(net).__name__}, not a neurons.Network")
        if net.input_shape != (n_features,):
            raise ValueError(f"build({n_features}, {n_outputs}) made a network with input shape {net.input_shape}; "
                             f"the data has {n_features} features, so it should be ({n_features},)")
        outputs = int(np.prod(net.output_shape))
        if outputs != n_outputs:
            raise ValueError(f"build({n_features}, {n_outputs}) made a network with {outputs} outputs "
                             f"(output shape {net.output_shape}); the targets need {n_outputs}")
        if self.optimizer is not None:
            net = net.set_optimizer(self.optimizer)
        return net

    def _output(self):
        """``(print_every, progress)`` for ``learn`` from ``verbose`` (0 or False: silent, no bar)."""
        if not self.verbose:
            return None, False
        return _checks.positive_int(int(self.verbose), "verbose"), None

    def _learn(self, net, x, y, validation=None, epochs=None, params=None, state=None, seed=None, shuffle=None):
        print_every, progress = self._output()
        return net.learn(x, y, validation=validation, batch=self.batch,
                         epochs=self.epochs if epochs is None else epochs,
                         print_every=print_every, seed=self.seed if seed is None else seed,
                         shuffle=self.shuffle if shuffle is None else shuffle, params=params, state=state,
                         progress=progress)

    def _fitted(self, net, trained):
        self.network_ = net
        self.trained_ = trained
        self.history_ = trained.history
        self.loss_curve_ = list(trained.history.train_loss)
        self.n_iter_ = trained.history.epochs
        return self

    def fit(self, X, y):
        """Build the network for ``X``'s features and ``y``'s outputs and train it ``epochs``
        epochs (fewer when ``validation_fraction`` and ``patience`` stop it early: the params of
        the epoch with the lowest validation loss are kept)."""
        X, y = self._validate(X, y, reset=True)
        t, n_outputs = self._targets(y, fitting=True)
        net = self._network(X.shape[1], n_outputs)
        x = X.astype(net.dtype, copy=False)
        validation = None
        if self.validation_fraction is not None:
            fraction = _checks.positive_number(self.validation_fraction, "validation_fraction")
            if fraction >= 1:
                raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
            stratify = t if isinstance(self, ClassifierMixin) else None
            x, xv, t, tv = train_test_split(x, t, test_size=fraction, random_state=_checks.seed(self.seed),
                                            stratify=stratify)
            validation = (xv, tv) if self.patience is None else (xv, tv, self.patience)
        elif self.patience is not None:
            raise ValueError("patience needs a validation set: give validation_fraction too")
        return self._fitted(net, self._learn(net, x, t, validation))

    def _partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "trained_")
        X, y = self._validate(X, y, reset=first)
        t, n_outputs = self._targets(y, first, classes)
        seed = _checks.seed(self.seed)
        if first:
            net = self._network(X.shape[1], n_outputs)
            params, state, opt_state, done = net.init(seed), None, None, 0
        else:
            net, trained = self.network_, self.trained_
            params, state, opt_state, done = trained.params, trained.state, trained.optimizer_state, self.n_iter_
        x = X.astype(net.dtype, copy=False)
        if opt_state is None:
            opt_state = net.optimizer.init(params)
        # epoch ``done`` of a run seeded ``seed``: the batches its shuffle makes, the dropout
        # masks its steps draw, the optimizer state it starts from
        shuffle = _checks.flag(self.shuffle, "shuffle")
        if shuffle:
            order = np.random.default_rng([seed, done]).permutation(len(x))
            x, t = x[order], t[order]
        run = net.set_optimizer(_Continued(net.optimizer, opt_state))
        new = self._learn(run, x, t, epochs=1, params=params, state=state, seed=_step_seed_for(seed, done),
                          shuffle=False)
        history = getattr(self, "history_", None)
        if history is None:
            history = new.history
        else:
            for k in ("train_loss", "val_loss", "val_acc", "train_time", "val_time"):
                getattr(history, k).extend(getattr(new.history, k))
        return self._fitted(net, Trained(net, new.params, history, new.optimizer_state, new.state))

    def _outputs(self, X):
        check_is_fitted(self, "trained_")
        X = validate_data(self, X, reset=False, dtype=self.network_.dtype)
        out = self.trained_.predict(X)
        return out.reshape(len(X), -1).astype(np.float64)


class Classifier(ClassifierMixin, _Estimator):
    """A scikit-learn classifier training ``build(n_features, n_classes)`` (SPEC §16).

    Labels may be of any type (strings, ints, ...): ``classes_`` holds them sorted, and the
    network learns one-hot targets over their indices. The network should end in softmax (its
    outputs are ``predict_proba``'s rows). ``fit`` needs two classes or more.

    Parameters: ``build``; ``epochs``, ``batch``, ``seed``, ``shuffle`` as in ``Network.learn``;
    ``optimizer`` (None: the network's own); ``validation_fraction`` (None, or a share held out,
    stratified, as ``learn``'s validation set: the best epoch's params are kept) and ``patience``
    (stop once the validation loss rose that many epochs in a row); ``verbose`` (0: silent; ``k``:
    print ``learn``'s epoch table every ``k`` epochs).
    """

    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=_FLOATS)
        check_classification_targets(y)
        return X, y

    def _targets(self, y, fitting, classes=None):
        if fitting:
            classes = np.unique(y if classes is None else np.asarray(classes))
            if len(classes) < 2:
                raise ValueError(f"Classifier needs at least 2 classes; got one class only: {classes[0]!r}")
            self.classes_ = classes
        return self._indices(y), len(self.classes_)

    def _indices(self, y):
        known = np.isin(y, self.classes_)
        if not known.all():
            j = int(np.argmin(known))
            raise ValueError(f"y[{j}] = {y[j]!r} is not one of the classes {list(self.classes_)}")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def partial_fit(self, X, y, classes=None):
        """Train one more epoch on ``(X, y)`` (see the module's docstring); the first call builds
        the network and needs ``classes``, every label ``y`` will ever hold."""
        if hasattr(self, "trained_"):
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
                raise ValueError(f"classes={list(classes)} differs from the first partial_fit's {list(self.classes_)}")
        elif classes is None:
            raise ValueError("the first partial_fit needs classes=, every label y will ever hold")
        return self._partial_fit(X, y, classes)

    def predict_proba(self, X):
        """The network's outputs, one row per sample, one column per class of ``classes_``."""
        return self._outputs(X)

    def predict(self, X):
        """The class of ``classes_`` with the highest output, for each sample."""
        out = self._outputs(X)
        return self.classes_[np.argmax(out, axis=1)]


class Regressor(RegressorMixin, _Estimator):
    """A scikit-learn regressor training ``build(n_features, n_targets)`` (SPEC §16).

    ``y`` of shape ``(N,)`` gives predictions of shape ``(N,)``; ``(N, k)`` gives ``(N, k)``
    (multi-output, also for ``k = 1``). Parameters as ``Classifier``'s (the validation split is
    not stratified).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _validate(self, X, y, reset):
        return validate_data(self, X, y, reset=reset, dtype=_FLOATS, multi_output=True, y_numeric=True)

    def _targets(self, y, fitting, classes=None):
        if fitting:
            self._one_d = y.ndim == 1
        elif (y.ndim == 1) != self._one_d or (y.ndim == 2 and y.shape[1] != self.n_outputs_):
            raise ValueError(f"y has shape {y.shape}; the first fit had "
                             f"{'(N,)' if self._one_d else f'(N, {self.n_outputs_})'}")
        t = y.reshape(len(y), -1)
        if fitting:
            self.n_outputs_ = t.shape[1]
        return t.astype(np.float64, copy=False), t.shape[1]

    def partial_fit(self, X, y):
        """Train one more epoch on ``(X, y)`` (see the module's docstring); the first call builds
        the network."""
        return self._partial_fit(X, y)

    def predict(self, X):
        """The network's outputs: ``(N,)`` after a 1-D target, else ``(N, n_outputs_)``."""
        out = self._outputs(X)
        return out.ravel() if self._one_d else out
