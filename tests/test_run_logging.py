import os

from eqxrl import Logger
from eqxrl.run.logging import read_metrics


def test_csv_grows_columns_and_tensorboard_writes(tmp_path):
    logger = Logger(str(tmp_path))
    logger.log({"loss": 1.0}, step=1)
    logger.log({"loss": 0.5, "q": 2.0}, step=2)
    logger.log({"return_mean": 10.0}, step=2, group="eval")
    logger.close()
    train = read_metrics(str(tmp_path / "train.csv"))
    assert train["step"].tolist() == [1, 2] and train["loss"].tolist() == [1.0, 0.5]
    assert train["q"][1] == 2.0 and train["q"][0] != train["q"][0]  # NaN where missing
    assert read_metrics(str(tmp_path / "eval.csv"))["return_mean"].tolist() == [10.0]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path))


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    logger = Logger(str(tmp_path), tensorboard=False)
    for step in (10, 20, 30):
        logger.log({"loss": float(step)}, step)
    logger.close()
    logger = Logger(str(tmp_path), tensorboard=False, resume_step=20)
    logger.log({"loss": 99.0}, 30)
    assert read_metrics(str(tmp_path / "train.csv"))["loss"].tolist() == [10.0, 20.0, 99.0]
