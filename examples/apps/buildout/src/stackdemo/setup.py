from setuptools import setup

setup(
    name="stackdemo",
    version="1.0",
    description="Views of the example app that use the stack's Celery broker and Solr",
    packages=["stackdemo"],
    package_data={"stackdemo": ["*.zcml"]},
    install_requires=["celery[redis]"],
)
