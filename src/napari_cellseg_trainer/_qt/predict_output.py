"""The prediction panel's outputs: Save… (segmentation, probabilities, a reproducing YAML) and
Export bioimage.io… (the checkpoint as a bioimage.io model package).

Shows and forwards only: :func:`..inference.outputs.save_prediction` writes the results and
:func:`..export.export_bioimageio` the package (in the panel's worker thread: it takes seconds).
Both refuse bad input with a notification and write nothing half: the core's files appear
under their names only once complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui import widgets
from napari.qt.threading import WorkerBase
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QVBoxLayout, QWidget

from ..errors import UserInputError
from .predict_run import as_czyx
from .widgets import push_buttons

if TYPE_CHECKING:
    from .config_form import ConfigForm
    from .predict_layers import ResultLayers
    from .worker_panel import Runner

_EXPORT_TIP = (
    "Write the checkpoint as a bioimage.io model package (.zip) for other tools "
    "(needs the bioimageio extra)"
)


class OutputTools(QWidget):
    """The "also save the probabilities" box, Save… and Export bioimage.io…

    Saves the result ``shown`` with the ``form``'s OutputDir; exports the form's checkpoint in
    the ``runner``'s worker.
    """

    def __init__(self, form: ConfigForm, shown: ResultLayers, runner: Runner) -> None:
        super().__init__()
        self.form, self.shown, self.runner = form, shown, runner
        self.save_probability = widgets.CheckBox(text="also save the probabilities", value=False)
        self.save_button, self.export_button = push_buttons(
            self,
            ("Save…", self.save, "Write segmentation and prediction config to OutputDir"),
            ("Export bioimage.io…", self._ask_export, _EXPORT_TIP),
        )
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.save_probability.native)
        layout.addLayout(buttons)

    def update_controls(self, busy: bool) -> None:
        result = self.shown.result
        self.save_button.setEnabled(not busy and result is not None and result.in_memory)
        self.export_button.setEnabled(not busy and bool(self.form.cfg.model_path))

    # ------------------------------------------------------------------ saving

    def save(self) -> list[Path]:
        """Write the segmentation (and probabilities) and a prediction YAML that reproduces it."""
        from ..inference.outputs import save_prediction

        result, cfg = self.shown.result, self.form.cfg.copy()
        if result is None:
            return []
        if not result.in_memory:
            show_error(f"already saved: the prediction is the OME-Zarr {result.store}")
            return []
        if not result.complete:
            show_error("only some planes are segmented (a preview): run Whole volume before saving")
            return []
        if not cfg.OutputDir.strip():
            show_error("OutputDir: choose the folder to save into")
            return []
        layer = self.shown.source()
        source_path = getattr(getattr(layer, "source", None), "path", None)
        try:
            written = save_prediction(
                cfg,
                result.probability,
                self.shown.threshold(),
                Path(source_path) if source_path else None,
                as_czyx(layer.data) if layer is not None else None,
                result.layer_name,
                with_probability=self.save_probability.value,
            )
        except UserInputError as err:
            show_error(str(err))
            return []
        show_info("saved " + ", ".join(p.name for p in written))
        return written

    # ------------------------------------------------------------------ bioimage.io

    def export_bioimageio(self, path: str | Path, overwrite: bool = False) -> WorkerBase | None:
        """Export the chosen checkpoint as the package ``path`` (.zip) in the worker thread."""
        from ..export import export_bioimageio

        runner = self.runner
        checkpoint = Path(self.form.cfg.model_path).expanduser()
        path = Path(path).expanduser()
        if path.suffix.lower() != ".zip":
            path = path.with_name(f"{path.name}.zip")
        if runner.busy:
            return None
        if not checkpoint.is_file():
            show_error(f"model_path: choose a checkpoint to export ({checkpoint} is not a file)")
            return None
        runner.status.setText(f"exporting {checkpoint.name} as a bioimage.io package…")

        def work() -> tuple[Path, list[str]]:
            caveats: list[str] = []
            written = export_bioimageio(checkpoint, path, overwrite=overwrite, note=caveats.append)
            return written, caveats

        return runner.start_worker(work, on_return=self._exported, failed="export failed")

    def _exported(self, result: tuple[Path, list[str]]) -> None:
        path, caveats = result
        self.runner.status.setText(f"exported {path}")
        show_info(f"bioimage.io package written: {path.name} (in {path.parent})")
        for caveat in caveats:
            show_info(caveat)

    def _ask_export(self) -> None:
        stem = Path(self.form.cfg.model_path).stem or "model"
        path, _ = QFileDialog.getSaveFileName(
            self, "Export bioimage.io package", f"{stem}.zip", "bioimage.io package (*.zip)"
        )
        if path:  # the dialog asked before replacing an existing file
            self.export_bioimageio(path, overwrite=True)
