"""Energy and carbon per job: mapping GPUs to jobs, and splitting each GPU's energy so every joule is counted once."""
