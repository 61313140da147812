"""scikit-learn estimators over ``gn.Model``: ``MLPClassifier`` and ``MLPRegressor``.

Their parameters and attributes are those of scikit-learn's own MLP estimators
(sklearn.neural_network) where gpunn's model has them: the Adam solver, Glorot-uniform
initialisation, ``alpha`` as the L2 penalty ``alpha / 2 * ||W||^2`` over a batch's mean loss,
``batch_size="auto"`` (``min(200, n_samples)``), training that stops when the loss has not
improved by ``tol`` for more than ``n_iter_no_change`` epochs, or, with ``early_stopping``, the
score on a held-out ``validation_fraction`` (the best epoch's parameters are kept). Added:
``device`` and ``precision`` (gpunn.Model's). ``fit`` is one call of ``Model.train`` (a callback
stops it), ``partial_fit`` one epoch of it: there is no second training loop here.

Example::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from gpunn.sklearn import MLPClassifier

    classifier = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,)))
    classifier.fit(X_train, y_train).score(X_test, y_test)

scikit-learn is an optional dependency (``pip install 'gpunn[sklearn]'``), imported only here.
A fitted estimator pickles to host arrays, and unpickles on its ``device``, or on the CPU
where that device is missing (with a warning in the log).
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("gpunn.sklearn needs scikit-learn: pip install 'gpunn[sklearn]'") from error

import gpunn as gn
from gpunn import io
from gpunn.errors import DeviceUnavailableError, InvalidArgumentError

log = logging.getLogger("gpunn")

ACTIVATIONS = {"relu": gn.ReLU, "tanh": gn.Tanh, "logistic": gn.Sigmoid, "identity": gn.Linear}


class _MLP(BaseEstimator):
    """What the classifier and the regressor share: the network, its fit and its pickling."""

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate_init: float = 0.001, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: bool = False,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 n_iter_no_change: int = 10, device: Any = None,
                 precision: str = "float32") -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.precision = precision

    # ---- fitting ------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> Any:
        """Train a new network on (X, y) for at most ``max_iter`` epochs; returns self."""
        X, y = validate_data(self, X, y, dtype=(numpy.float32, numpy.float64),
                             multi_output=self._multi_output, y_numeric=self._y_numeric)
        targets = self._targets(y)
        self._check_parameters()
        rng = check_random_state(self.random_state)
        self.model_ = self._build(X.shape[1], self._n_outputs(targets), rng)
        gn.seed(int(rng.randint(2**31 - 1)))  # the shuffling order (and dropout)
        return self._train(X.astype(numpy.float32, copy=False), targets, rng)

    def _partial_fit(self, X: Any, y: Any, classes: Any = None) -> Any:
        """One epoch over (X, y), continuing the network of earlier calls (a new one at the
        first call), as scikit-learn's partial_fit does."""
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, reset=first, dtype=(numpy.float32, numpy.float64),
                             multi_output=self._multi_output, y_numeric=self._y_numeric)
        if first:
            targets = self._targets(y, classes=classes, partial=True)
            self._check_parameters()
            rng = check_random_state(self.random_state)
            self.model_ = self._build(X.shape[1], self._n_outputs(targets), rng)
            gn.seed(int(rng.randint(2**31 - 1)))
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
        else:
            targets = self._more_targets(y)
        batch_size = self._batch(len(X))
        history = self.model_.train(X.astype(numpy.float32, copy=False), targets, epochs=1,
                                    initial_epoch=self.n_iter_, batch_size=batch_size,
                                    shuffle=self.shuffle, verbose=1 if self.verbose else 0)
        self.loss_curve_.append(history["loss"][0])
        self.n_iter_ += 1
        self.t_ += len(X)
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _batch(self, samples: int) -> int:
        """The batch size, and scikit-learn's L2 term alpha / 2 * ||W||^2 over a batch's mean
        loss as gpunn's per-layer l2 strength."""
        batch_size = min(200 if self.batch_size == "auto" else self.batch_size, samples)
        for layer in self.model_.trainable_layers:
            layer.weight_regularizer_l2 = self.alpha / (2 * batch_size)
        return batch_size

    def _train(self, X: numpy.ndarray, targets: numpy.ndarray, rng: Any) -> Any:
        batch_size = self._batch(len(X))
        validation = None
        if self.early_stopping:
            stratify = targets if self._stratify and len(numpy.unique(targets)) > 1 else None
            X, X_val, targets, y_val = train_test_split(
                X, targets, test_size=self.validation_fraction, stratify=stratify,
                random_state=rng.randint(2**31 - 1))
            validation, self._validation_targets = (X_val, y_val), y_val
        # scikit-learn stops after more than n_iter_no_change epochs without an improvement
        # of tol: patience n_iter_no_change + 1 in Keras' terms.
        monitor = (self._validation_metric if self.early_stopping else "loss")
        stop = gn.callbacks.EarlyStopping(monitor=monitor, min_delta=self.tol,
                                          patience=self.n_iter_no_change + 1,
                                          restore_best_weights=self.early_stopping)
        history = self.model_.train(X, targets, epochs=self.max_iter, batch_size=batch_size,
                                    shuffle=self.shuffle, validation_data=validation,
                                    callbacks=[stop], verbose=1 if self.verbose else 0)
        self.loss_curve_ = list(history["loss"])
        self.n_iter_ = len(self.loss_curve_)
        self.t_ = self.n_iter_ * len(X)
        self.best_loss_ = None if self.early_stopping else min(self.loss_curve_)
        self.stopped_ = history.stopped
        if self.early_stopping:
            self.validation_scores_ = self._scores(history)
            self.best_validation_score_ = max(self.validation_scores_)
        return self

    def _check_parameters(self) -> None:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if not all(isinstance(size, numbers.Integral) and size > 0 for size in sizes):
            raise InvalidArgumentError(f"hidden_layer_sizes must be positive whole numbers; "
                                       f"received {self.hidden_layer_sizes!r}.")
        if self.activation not in ACTIVATIONS:
            raise InvalidArgumentError(f"activation must be one of {', '.join(ACTIVATIONS)}; "
                                       f"received {self.activation!r}.")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, numbers.Integral)
                                              and self.batch_size > 0):
            raise InvalidArgumentError(f"batch_size must be 'auto' or a whole number > 0; "
                                       f"received {self.batch_size!r}.")
        if not (isinstance(self.max_iter, numbers.Integral) and self.max_iter > 0):
            raise InvalidArgumentError(f"max_iter must be a whole number > 0; received "
                                       f"{self.max_iter!r}.")
        if not 0 < self.validation_fraction < 1:
            raise InvalidArgumentError(f"validation_fraction must be > 0 and < 1; received "
                                       f"{self.validation_fraction!r}.")
        self._sizes = sizes

    def _build(self, n_features: int, n_outputs: int, rng: Any) -> gn.Model:
        """The network, with scikit-learn's Glorot-uniform initialisation drawn from ``rng``."""
        model = gn.Model(device=self.device, precision=self.precision)
        widths = [n_features, *self._sizes, n_outputs]
        for index, (n_inputs, n_neurons) in enumerate(zip(widths, widths[1:])):
            model.add(gn.Dense(n_inputs, n_neurons))
            model.add(self._head() if index == len(widths) - 2
                      else ACTIVATIONS[self.activation]())
        loss, accuracy = self._loss_and_accuracy()
        model.set(loss=loss, accuracy=accuracy, optimizer=gn.Adam(
            learning_rate=self.learning_rate_init, beta_1=self.beta_1, beta_2=self.beta_2,
            epsilon=self.epsilon))
        model.finalize()
        factor = 2.0 if self.activation == "logistic" else 6.0
        parameters = []
        for n_inputs, n_neurons in zip(widths, widths[1:]):
            bound = numpy.sqrt(factor / (n_inputs + n_neurons))
            parameters.append((rng.uniform(-bound, bound, (n_inputs, n_neurons)),
                               rng.uniform(-bound, bound, (1, n_neurons))))
        model.set_parameters(parameters)
        return model

    def _predict_outputs(self, X: Any) -> numpy.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(numpy.float32, numpy.float64))
        return self.model_.predict(X.astype(numpy.float32, copy=False))

    @property
    def coefs_(self) -> list[numpy.ndarray]:
        """The weight matrices, layer by layer (host copies), as scikit-learn names them."""
        check_is_fitted(self, "model_")
        return [weights for weights, _ in self.model_.get_parameters()]

    @property
    def intercepts_(self) -> list[numpy.ndarray]:
        check_is_fitted(self, "model_")
        return [biases.ravel() for _, biases in self.model_.get_parameters()]

    # ---- pickling: host arrays, whatever the device ----------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object's __getstate__ gives __dict__ itself
        if "model_" in state:
            model = state["model_"]
            state["model_"] = {"header": io.model_header(model),
                               "arrays": io.model_arrays(model)}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        saved = state.get("model_")
        if isinstance(saved, dict):
            try:
                model = io.build_model(saved["header"], gn.Model, state.get("device"))
            except DeviceUnavailableError as error:
                log.warning("gpunn: the estimator was fitted on device %r, which this machine "
                            "lacks (%s); it loads on the CPU", state.get("device"), error)
                model = io.build_model(saved["header"], gn.Model, "cpu")
            io.restore_arrays(model, saved["arrays"], "the pickled estimator")
            state = {**state, "model_": model}
        super().__setstate__(state)


class MLPClassifier(ClassifierMixin, _MLP):
    """A multi-layer perceptron classifier (softmax output, cross-entropy, Adam) with
    scikit-learn's ``MLPClassifier`` parameters; ``classes_`` are the sorted distinct labels
    of y, of any type. Example: ``MLPClassifier((64,), max_iter=50).fit(X, y).predict(X)``."""

    _multi_output, _y_numeric, _stratify = False, False, True
    _validation_metric = "val_accuracy"

    def _targets(self, y: Any, *, classes: Any = None, partial: bool = False) -> numpy.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if partial and classes is None:
            raise InvalidArgumentError("partial_fit needs classes=... (every label there will "
                                       "be) at its first call.")
        self.classes_ = numpy.unique(y if classes is None else classes)
        if len(self.classes_) < 2:
            raise InvalidArgumentError(f"y holds one class, {self.classes_[0]!r}; MLPClassifier "
                                       f"needs samples of at least 2 classes.")
        return self._more_targets(y)

    def _more_targets(self, y: Any) -> numpy.ndarray:
        y = column_or_1d(y, warn=True)
        unknown = numpy.setdiff1d(y, self.classes_)
        if len(unknown):
            raise InvalidArgumentError(f"y holds labels that are not among classes_ "
                                       f"{list(self.classes_)}: {list(unknown[:5])}.")
        return numpy.searchsorted(self.classes_, y)  # LabelEncoder's codes

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y); ``classes``, all the labels, at the first call."""
        return self._partial_fit(X, y, classes)

    def _n_outputs(self, targets: numpy.ndarray) -> int:
        return len(self.classes_)

    def _head(self) -> Any:
        return gn.Softmax()

    def _loss_and_accuracy(self) -> tuple[Any, Any]:
        return gn.CategoricalCrossentropy(), gn.CategoricalAccuracy()

    def _scores(self, history: dict) -> list[float]:
        return list(history["val_accuracy"])

    def predict_proba(self, X: Any) -> numpy.ndarray:
        """The probability of each class (columns in the order of ``classes_``)."""
        return self._predict_outputs(X).astype(numpy.float64)

    def predict_log_proba(self, X: Any) -> numpy.ndarray:
        return numpy.log(self.predict_proba(X))

    def predict(self, X: Any) -> numpy.ndarray:
        """The most probable class of each sample, as a label of ``classes_``."""
        outputs = self._predict_outputs(X)  # first: unfitted, it raises NotFittedError
        return self.classes_[outputs.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLP):
    """A multi-layer perceptron regressor (linear output, mean squared error, Adam) with
    scikit-learn's ``MLPRegressor`` parameters; y may have several columns."""

    _multi_output, _y_numeric, _stratify = True, True, False
    _validation_metric = "val_loss"

    def _targets(self, y: Any, **unused: Any) -> numpy.ndarray:
        self._single_output = y.ndim == 1
        return self._more_targets(y)

    def _more_targets(self, y: Any) -> numpy.ndarray:
        return numpy.asarray(y, dtype=numpy.float32).reshape(len(y), -1)

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over (X, y), continuing the network of earlier calls."""
        return self._partial_fit(X, y)

    def _n_outputs(self, targets: numpy.ndarray) -> int:
        return targets.shape[1]

    def _head(self) -> Any:
        return gn.Linear()

    def _loss_and_accuracy(self) -> tuple[Any, Any]:
        return gn.MeanSquaredError(), gn.RegressionAccuracy()

    def _scores(self, history: dict) -> list[float]:
        # R² = 1 - MSE / variance (with several outputs, over their mean variance, where
        # scikit-learn averages each output's R²)
        variance = float(numpy.var(self._validation_targets, axis=0).mean())
        return [1.0 - loss / variance if variance > 0 else 0.0 for loss in history["val_loss"]]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def predict(self, X: Any) -> numpy.ndarray:
        """The predicted targets, shaped as y was (one column: a 1-D array)."""
        outputs = self._predict_outputs(X).astype(numpy.float64)
        return outputs.ravel() if self._single_output else outputs
