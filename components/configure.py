from kfp import dsl

from cnnops.components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def configure(
    config: dict,
    data_source: str = "",
    model_name: str = "",
    architecture: str = "",
    epochs: int = 0,
    learning_rate: float = 0.0,
    batch_size: int = 0,
    seed: int = -1,
    gate_metric: str = "",
    force_promote: bool = False,
) -> dict:
    """Resolve the typed parameters over the config overlay into the validated config every later
    task takes; an unset parameter ("", 0, -1, false) keeps the overlay's value, else the default.
    Imports no TensorFlow, so a bad setting stops the run within seconds."""
    from cnnops.core.errors import exit_on_user_error
    from cnnops.settings.parameters import PipelineParameters, configure_pipeline

    with exit_on_user_error():
        return configure_pipeline(
            config,
            PipelineParameters(
                data_source=data_source,
                model_name=model_name,
                architecture=architecture,
                epochs=epochs,
                learning_rate=learning_rate,
                batch_size=batch_size,
                seed=seed,
                gate_metric=gate_metric,
                force_promote=force_promote,
            ),
        )
