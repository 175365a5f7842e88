"""`python -m vlmchat.finetune JOB_FOLDER/job.json [--resume]`: run one fine-tune job (see job.py)."""

import sys

from .job import main

sys.exit(main())
