"""The Semantic Pullbacks paper's published numbers (arXiv:2507.22832 v6), copied as numbers only.

From the authors' repository github.com/314-Foundation/SemanticPullbacks, ``results/`` at commit fe1b530:
mean ± std over 1,000 ImageNet val images (seed 314) per explainer and metric, and Focus over 500 mosaics.
"""
from __future__ import annotations

SOURCE = "github.com/314-Foundation/SemanticPullbacks, results/ at fe1b530 (arXiv:2507.22832 v6)"
IMAGES, MOSAICS = 1000, 500
METRICS = ("Infidelity", "Faith.Corr", "Faith.Est", "Mono.Corr", "Max.Sens", "Rand.Logit")

_TABLES = {
    "resnet50": """
SoftPullback        5.989±5.67     0.389±0.37     0.437±0.41     0.42±0.39      0.119±0.04     -0.062±0.42
PullbackAscent      5.384±4.83     0.382±0.37     0.394±0.43     0.421±0.4      0.244±0.09     0.212±0.19
SmoothPullback      8.122±10.13    0.326±0.39     0.321±0.46     0.352±0.4      0.22±0.05      -0.065±0.4
FusionPullback      10.131±14.55   0.306±0.4      0.306±0.47     0.35±0.4       0.362±0.08     -0.051±0.39
Gradient            83.294±68.15   0.241±0.36     0.289±0.45     0.275±0.39     0.952±0.17     -0.032±0.23
GradientAscent      29.48±35.36    0.278±0.37     0.131±0.46     0.231±0.32     1.267±0.04     0.002±0.05
SmoothGrad          66.883±58.16   0.331±0.4      0.321±0.49     0.364±0.36     0.639±0.08     -0.024±0.2
FusionGrad          58.514±57.8    0.344±0.39     0.336±0.48     0.357±0.35     0.855±0.09     -0.014±0.17
GradientShap        69.072±62.93   0.233±0.38     0.409±0.44     0.344±0.41     1.4±0.41       -0.023±0.24
IntegratedGradients 66.83±61.21    0.244±0.38     0.421±0.44     0.35±0.41      0.788±0.21     -0.029±0.23
DeepLift            73.188±62.6    0.201±0.36     0.404±0.43     0.324±0.42     0.982±0.18     -0.033±0.24
GuidedGradCam       5.761±5.22     0.437±0.37     0.275±0.41     0.507±0.39     0.242±0.07     0.417±0.32
""",
    "vgg11_bn": """
SoftPullback        16.303±31.68   0.606±0.3      0.53±0.4       0.375±0.39     0.212±0.08     -0.064±0.33
PullbackAscent      5.616±13.18    0.57±0.29      0.376±0.48     0.312±0.37     0.39±0.11      0.136±0.13
SmoothPullback      14.03±30.57    0.545±0.32     0.428±0.46     0.309±0.4      0.398±0.11     -0.048±0.32
FusionPullback      16.056±34.46   0.513±0.33     0.406±0.47     0.315±0.39     0.513±0.11     -0.035±0.29
Gradient            100.09±107.94  0.457±0.35     0.466±0.41     0.316±0.37     0.898±0.14     -0.053±0.29
GradientAscent      18.523±35.24   0.508±0.3      0.264±0.46     0.234±0.32     1.217±0.06     6.65e-04±0.07
SmoothGrad          52.044±70.8    0.513±0.34     0.508±0.41     0.385±0.36     0.781±0.11     -0.025±0.19
FusionGrad          38.651±60.23   0.506±0.34     0.521±0.39     0.363±0.34     0.955±0.13     -0.013±0.16
GradientShap        76.05±94.76    0.43±0.36      0.632±0.33     0.381±0.41     1.086±0.22     -0.042±0.26
IntegratedGradients 75.796±92.29   0.434±0.36     0.634±0.33     0.379±0.41     0.752±0.15     -0.046±0.27
DeepLift            85.658±97.55   0.356±0.37     0.577±0.35     0.358±0.42     0.929±0.15     -0.057±0.29
GuidedGradCam       4.37±4.72      0.708±0.22     0.406±0.28     0.529±0.41     0.292±0.08     0.408±0.29
""",
    "pvt_v2_b1": """
SoftPullback        6.264±6.4      0.119±0.34     0.16±0.41      0.164±0.43     1.066±0.18     -0.006±0.35
PullbackAscent      1.634±1.03     0.122±0.36     0.201±0.41     0.219±0.33     0.855±0.12     0.121±0.11
SmoothPullback      4.974±5.46     0.102±0.39     0.146±0.49     0.231±0.38     0.519±0.09     0.008±0.23
FusionPullback      5.156±5.72     0.093±0.39     0.114±0.49     0.2±0.38       0.753±0.11     0.007±0.19
Gradient            8.914±7.89     0.105±0.33     0.117±0.41     0.185±0.43     1.034±0.16     -0.03±0.3
GradientAscent      4.506±4.07     0.118±0.33     0.06±0.42      0.164±0.35     1.242±0.07     0.006±0.06
SmoothGrad          8.798±7.08     0.096±0.38     0.171±0.48     0.28±0.38      0.569±0.1      -0.012±0.13
FusionGrad          6.673±5.6      0.101±0.39     0.144±0.48     0.262±0.38     0.979±0.16     5.73e-04±0.11
GradientShap        12.433±8.45    0.067±0.32     0.177±0.39     0.169±0.45     2.471±1.56     0.003±0.34
IntegratedGradients 12.578±8.39    0.068±0.32     0.157±0.4      0.17±0.45      1.374±0.37     0.008±0.33
DeepLift            13.132±8.83    0.085±0.31     0.184±0.38     0.186±0.45     1.047±0.15     -0.029±0.32
""",
}
_FOCUS = {
    "resnet50": """
GuidedGradCam       0.8493±0.1762
SoftPullback        0.7483±0.1344
PullbackAscent      0.7305±0.1293
SmoothPullback      0.7183±0.1497
FusionPullback      0.6965±0.1505
SmoothGrad          0.6408±0.1240
FusionGrad          0.6349±0.1199
Gradient            0.6337±0.1395
IntegratedGradients 0.6227±0.1670
DeepLift            0.6210±0.1753
GradientShap        0.6154±0.1676
GradientAscent      0.5852±0.1040
""",
    "pvt_v2_b1": """
SmoothPullback      0.6349±0.1026
SoftPullback        0.6250±0.1650
FusionPullback      0.6157±0.1048
FusionGrad          0.6053±0.1041
SmoothGrad          0.5922±0.1114
Gradient            0.5609±0.1703
IntegratedGradients 0.5595±0.1771
GradientShap        0.5537±0.1792
PullbackAscent      0.5531±0.0948
DeepLift            0.5507±0.2034
GradientAscent      0.5474±0.0993
""",
}


def _parse(cell: str) -> tuple[float, float]:
    mean, std = cell.split("±")
    return float(mean), float(std)


TABLE: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    model: {line.split()[0]: dict(zip(METRICS, map(_parse, line.split()[1:]))) for line in text.strip().splitlines()}
    for model, text in _TABLES.items()}
"""model -> explainer -> metric -> (mean, std), the paper's table."""
FOCUS: dict[str, dict[str, tuple[float, float]]] = {
    model: {line.split()[0]: _parse(line.split()[1]) for line in text.strip().splitlines()}
    for model, text in _FOCUS.items()}
"""model -> explainer -> (mean, std) of Focus."""
COUNTERPART = {"resnet50_imagenette": "resnet50", "densenet121_imagenette": None, "resnet50": "resnet50",
               "vgg11_bn": "vgg11_bn", "pvt_v2_b1": "pvt_v2_b1"}
"""Which of the authors' models each of ours stands for (the same architecture; DenseNet121 is not in the paper)."""
