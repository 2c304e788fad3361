"""`python -m preprocess.stickers --raw_dir=RAW --data_dir=DATA`: the stickers raw layout -> TFRecord shards."""

if __name__ == "__main__":
    # Imported here, not at the top: worker processes re-import this module and must stay light.
    from preprocess import cli

    cli.run("stickers")
