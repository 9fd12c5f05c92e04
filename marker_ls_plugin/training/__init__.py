"""Fine-tuning surya recognition: arguments (config), data, model surgery, the loop and its optimization step,
the stop control, metrics, and model directories. Imports no Django and nothing of marker_ls_plugin outside it."""
