"""Import order: a library that patches transformers/trl/peft while it is imported must be imported first.

One rule, read from three places, one module per job (nothing is imported here, so a caller pays only
for the view it uses):
- `patchers`: the knowledge: which libraries patch which at import, and which only when called;
- `live`: a running process (a notebook kernel) through sys.modules: `check_imports()`;
- `script`: a .py file or a notebook parsed with ast, never run: `check_script()`, reading import
  sites with `sites` and notebook cells (magics, `!pip` lines) with `notebook`;
- `liger`: Liger's apply_liger_kernel_to_*() called after the model is built (call order, not imports).
"""
