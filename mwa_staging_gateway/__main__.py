from mwa_staging_gateway.main import run

if __name__ == "__main__":
    run()
