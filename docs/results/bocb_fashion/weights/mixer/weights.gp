# Written by bocbc analyze weights; run with gnuplot in this directory.
set datafile separator ','
set terminal pngcairo size 900,540 noenhanced
set key outside right
set xlabel 'layer (weight matrices in file order)'
set grid
set output 'weights_entropy.png'
set ylabel 'spectral entropy (normalised)'
plot 'weights.csv' every ::1 using ($1 == 0 ? $3 : 1/0):7 with linespoints title 'adabelief(lr=0.005, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 1 ? $3 : 1/0):7 with linespoints title 'adabound(lr=0.0005, weight_decay=0.01)', \
     'weights.csv' every ::1 using ($1 == 2 ? $3 : 1/0):7 with linespoints title 'adagrad(lr=0.0005, weight_decay=1e-08)', \
     'weights.csv' every ::1 using ($1 == 3 ? $3 : 1/0):7 with linespoints title 'adamw(lr=0.001, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 4 ? $3 : 1/0):7 with linespoints title 'adan(lr=0.002, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 5 ? $3 : 1/0):7 with linespoints title 'lamb(lr=0.005, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 6 ? $3 : 1/0):7 with linespoints title 'lars(lr=1.2, weight_decay=0.0001)', \
     'weights.csv' every ::1 using ($1 == 7 ? $3 : 1/0):7 with linespoints title 'lion(lr=0.0001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 8 ? $3 : 1/0):7 with linespoints title 'radam(lr=0.001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 9 ? $3 : 1/0):7 with linespoints title 'rmsprop(lr=0.001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 10 ? $3 : 1/0):7 with linespoints title 'sgd(lr=0.1, weight_decay=0.0001, momentum=0.9)', \
     'weights.csv' every ::1 using ($1 == 11 ? $3 : 1/0):7 with linespoints title 'sgdp(lr=0.2, weight_decay=0.0005, momentum=0.9)'
set output 'weights_alpha.png'
set ylabel 'power-law alpha of the eigenvalue tail'
plot 'weights.csv' every ::1 using ($1 == 0 ? $3 : 1/0):8 with linespoints title 'adabelief(lr=0.005, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 1 ? $3 : 1/0):8 with linespoints title 'adabound(lr=0.0005, weight_decay=0.01)', \
     'weights.csv' every ::1 using ($1 == 2 ? $3 : 1/0):8 with linespoints title 'adagrad(lr=0.0005, weight_decay=1e-08)', \
     'weights.csv' every ::1 using ($1 == 3 ? $3 : 1/0):8 with linespoints title 'adamw(lr=0.001, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 4 ? $3 : 1/0):8 with linespoints title 'adan(lr=0.002, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 5 ? $3 : 1/0):8 with linespoints title 'lamb(lr=0.005, weight_decay=0.05)', \
     'weights.csv' every ::1 using ($1 == 6 ? $3 : 1/0):8 with linespoints title 'lars(lr=1.2, weight_decay=0.0001)', \
     'weights.csv' every ::1 using ($1 == 7 ? $3 : 1/0):8 with linespoints title 'lion(lr=0.0001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 8 ? $3 : 1/0):8 with linespoints title 'radam(lr=0.001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 9 ? $3 : 1/0):8 with linespoints title 'rmsprop(lr=0.001, weight_decay=0)', \
     'weights.csv' every ::1 using ($1 == 10 ? $3 : 1/0):8 with linespoints title 'sgd(lr=0.1, weight_decay=0.0001, momentum=0.9)', \
     'weights.csv' every ::1 using ($1 == 11 ? $3 : 1/0):8 with linespoints title 'sgdp(lr=0.2, weight_decay=0.0005, momentum=0.9)'
