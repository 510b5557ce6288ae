"""Interactive widgets (ipywidgets) over a traced generation — for the lessons and JupyterLab.

- `DenoisingExplorer(run, pipe)`: one timestep slider (with play) moving x_t, x̂0, the
  noise prediction, per-word attention maps and the schedule marker together;
- `PromptExplorer(pipe)`: a text box with the live token list, and a Generate button;
- `AttentionExplorer(run)`: pick a word, a layer and a step.

Widgets only bind controls to data already in a `Run` and to `sdviz.figures`; moving a
control never re-runs a generation. Every control and picture carries a stable CSS
class (listed in each docstring) so that browser tests can find it.
"""

from __future__ import annotations

from .attention import AttentionExplorer
from .denoising import DenoisingExplorer
from .prompt import PromptExplorer, tokens_html

__all__ = ["AttentionExplorer", "DenoisingExplorer", "PromptExplorer", "tokens_html"]
