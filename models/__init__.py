"""Models, found by name: ``--model X`` imports ``models/X_model.py`` and uses its class ``XModel``
(a subclass of BaseModel). A new model is one new file; see ``template_model.py``."""
import sys

from util.registry import available, find_class


def available_models() -> list[str]:
    return available(sys.modules[__name__], '_model')


def find_model_using_name(model_name: str):
    from .base_model import BaseModel
    return find_class(sys.modules[__name__], model_name, '_model', BaseModel, '--model')


def get_option_setter(model_name: str):
    return find_model_using_name(model_name).modify_commandline_options


def create_model(opt):
    """Build the model named by ``opt.model``."""
    instance = find_model_using_name(opt.model)(opt)
    if opt.rank == 0:
        print(f'model [{type(instance).__name__}] was created')
    return instance
