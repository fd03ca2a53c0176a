"""Opening the notebook in JupyterLab leaves it unmodified: its metadata is what JupyterLab's autosave writes."""
import json

import nbformat
from jupyter_client.kernelspec import KernelSpecManager

from utils.figures.notebook import KERNELSPEC, clean
from utils.paths import REPO

NOTEBOOK = REPO / "pullbacks.ipynb"


def test_the_kernelspec_is_the_one_jupyterlab_writes():
    metadata = json.loads(NOTEBOOK.read_text())["metadata"]
    spec = KernelSpecManager().get_kernel_spec("python3")  # the kernel JupyterLab starts, named as it names it
    assert metadata["kernelspec"] == {"display_name": spec.display_name, "language": spec.language,
                                      "name": "python3"} == KERNELSPEC
    info = metadata["language_info"]
    assert (info["name"], info["pygments_lexer"], info["codemirror_mode"]) == ("python", "ipython3",
                                                                             {"name": "ipython", "version": 3})


def test_saving_the_notebook_again_changes_no_byte():
    text = NOTEBOOK.read_text()
    notebook = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert nbformat.writes(notebook) + "\n" == text  # what JupyterLab's save (nbformat.write) produces


def test_cleaning_after_nbconvert_restores_jupyterlabs_kernelspec():
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                                 "name": "python3"}})
    clean(notebook)
    assert notebook.metadata["kernelspec"] == KERNELSPEC
